"""conveyor.ledger"""

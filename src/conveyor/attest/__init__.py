"""conveyor.attest"""

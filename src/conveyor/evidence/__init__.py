"""conveyor.evidence"""

"""conveyor.registry"""

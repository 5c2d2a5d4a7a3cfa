"""The command-line face: parse arguments, call ``conveyor.service``, render the result."""

"""The applications on top of every layer: the ``alscout`` command line, the demo, the report.

Nothing below imports this package.
"""

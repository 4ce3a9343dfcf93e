"""Writing what a user keeps: atomic files (atomic.py) and replaceable output folders (outputs.py)."""

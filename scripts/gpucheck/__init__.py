"""Helpers of ``scripts/gpu_check.py``: the one command that measures every GPU figure.

``transfer`` cuts files into pieces and puts them back together, ``prepare`` downloads what a GPU
machine without network needs, ``install`` installs it there, ``plan`` says what is measured,
``figures`` reads each entry point's output, ``geometry_share`` times M inside a training step,
``runner`` runs the plan under time caps and ``report`` prints the README table.
"""

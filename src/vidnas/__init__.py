"""vidnas: search, train, evaluate, benchmark and deploy fast spatial-temporal models for semantic video segmentation.

Importing the package has no side effects and does not import torch; import the sub-packages you need.
"""

__version__ = "0.1.0"

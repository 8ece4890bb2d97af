import os
import sys

# tests import the shared helpers (tests/_torch.py) as top-level modules
sys.path.insert(0, os.path.dirname(__file__))

import os
import sys

# Tests import the repo's packages from the checkout, whether or not `pip install -e .` ran.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

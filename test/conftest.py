import os
import sys

# The test helpers (_reference.py) live next to the tests.
sys.path.insert(0, os.path.dirname(__file__))

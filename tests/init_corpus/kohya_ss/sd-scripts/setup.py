# Shape of kohya-ss/sd-scripts setup.py: the package is named "library", not after its folder.
from setuptools import find_packages, setup

setup(name="library", packages=find_packages())

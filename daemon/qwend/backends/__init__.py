"""Engine: model backends (the interface, and one module per library that runs a model).

Being moved here from qwend.engine (issue 12); new backends start here.
"""

"""The search: spaces, ask/tell TPE, the trial journal, the runner.

Nothing in this package imports torch or the model's modules; the valid
hyperparameters are passed in by the caller.
"""

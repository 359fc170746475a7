"""Adversarial tests (issue #9): each case asserts a promise under faults, bad input or hostile input -
training untouched, the error counted, data intact, a clear error, nothing rendered or executed."""

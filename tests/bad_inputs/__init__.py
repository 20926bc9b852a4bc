"""The bad-input catalogue (`cases.py`), run by tests/test_bad_inputs.py."""

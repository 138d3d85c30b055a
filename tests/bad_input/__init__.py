"""The bad-input audit: rows (``case.Case``) in ``cases_*.py``, run crash-safe by
``runner.py``, tested by ``tests/test_bad_input_audit.py``, listed in docs/BAD_INPUT.md
(``python scripts/gen_bad_input_doc.py``)."""

"""The one exception type the command-line tools turn into a one-line error."""


class VQDefenseError(Exception):
  """A problem the user can fix (bad config, missing data, corrupt checkpoint).

  `train.py` and `evaluate.py` print `error: <message>` on one line and exit
  with status 2; they never print a traceback for these.
  """

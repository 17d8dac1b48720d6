"""The parts of ``python -m sincos_rs.train``, one concept per module:
``config`` (the settings and the result), ``loop`` (training), ``stream``
(a step at a time after training), ``checkpoints`` (save and resume) and
``text`` (one-line messages).

Imports run one way: ``loop`` and ``checkpoints`` use ``config``; the command
line, ``sincos_rs.train``, uses them all and re-exports their public names
(import them from there).
"""

"""Training: simulated data (:mod:`.simulate`, :mod:`.dataset`), augmentation and the trainer.

Needs the ``train`` extra (gemmi); inference never imports this package.
"""

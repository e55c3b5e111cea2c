"""How good a correction is: metrics, an L2A-like product against a reference, the AI's held-out scenes.

- :mod:`.metrics`: streaming per-band RMSE, MAE, bias, R2, the share within the L2A specification and
  the spectral angle (the run's ``--reference``, ``atmocorr evaluate``, the real-pair benchmark);
- :mod:`.reference`: ``eotwin atmocorr evaluate PRED REF`` and the run's own ``evaluation.png``;
- :mod:`.heldout`: every method on held-out 6S-made scenes (benchmarks/atmocorr_accuracy.py);
- :mod:`.loso`: leave-one-source-out over the surface library.
"""

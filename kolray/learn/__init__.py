"""Learning: datasets in, registered and evaluated models out.

- :mod:`kolray.learn.nets`: the PyTorch networks (:class:`~kolray.learn.nets.TokenNet`,
  :class:`~kolray.learn.nets.KolNet`).
- :mod:`kolray.learn.predictors`: what serving and the backtest call
  (:class:`~kolray.learn.predictors.TokenClassifier`, :class:`~kolray.learn.predictors.KolForecaster`).
- :mod:`kolray.learn.baselines`, :mod:`kolray.learn.calibration`: the models to beat and the
  probability calibration and threshold policy.
- :mod:`kolray.learn.train`, :mod:`kolray.learn.tune`, :mod:`kolray.learn.evaluate`,
  :mod:`kolray.learn.registry`: one module per verb.
- :mod:`kolray.learn.stage`: the orchestration (train and register, the continuous cycle).

Nothing here imports :mod:`kolray.serve`: a running app watches the registry.
"""

"""Learning: datasets in, registered and evaluated models out.

- :mod:`kolray.learn.nets`: the PyTorch networks (:class:`~kolray.learn.nets.TokenNet`,
  :class:`~kolray.learn.nets.KolNet`).
- :mod:`kolray.learn.predictors`: what serving and the backtest call
  (:class:`~kolray.learn.predictors.TokenClassifier`, :class:`~kolray.learn.predictors.KolForecaster`).
- :mod:`kolray.learn.baselines`, :mod:`kolray.learn.calibration`: the models to beat and the
  probability calibration and threshold policy.
- :mod:`kolray.learn.metrics`: every metric, shared by training, the search, promotion and reports.
- :mod:`kolray.learn.versions`: version ids and the code version stamped on datasets and models.
- :mod:`kolray.learn.train`, :mod:`kolray.learn.tune`, :mod:`kolray.learn.evaluate`,
  :mod:`kolray.learn.registry`: fit one network, search for the best, report on the test split,
  store versions and promote.
- :mod:`kolray.learn.stage`: the orchestration (train and register, evaluate a version, the
  continuous cycle).

Nothing here imports :mod:`kolray.serve`: a running app watches the registry.
"""

"""Worlds and datasets built for tests, benchmarks and screenshots; never imported by the product.

- :mod:`kolray.testing.synthetic_datasets`: token and KOL datasets with a known signal.
- :mod:`kolray.testing.synthetic_market`: a fast stand-in for the chain twin's swaps, at any size.
- :mod:`kolray.testing.serving_world`: a small deterministic world with registered models to serve.
- :mod:`kolray.testing.backtest_world`: a world whose backtest can be worked out by hand.
- :mod:`kolray.testing.market_world`: a twin world's swaps in a database, and its true prices.
"""

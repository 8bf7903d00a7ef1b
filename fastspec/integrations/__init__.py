"""fastspec inside other tools. Each module imports its tool only when it is imported itself, so
``import fastspec`` never does:

- :mod:`fastspec.integrations.hf`: ``GeometryCallback``, a ``transformers.TrainerCallback``;
- :mod:`fastspec.integrations.lightning`: ``GeometryCallback``, a ``lightning.pytorch.Callback``
  (both on :class:`fastspec.integrations._online.OnlineGeometry`);
- :mod:`fastspec.integrations.torchmetrics`: ``SpectralMetrics``, a torchmetrics ``Metric``;
- :mod:`fastspec.integrations.lm_eval`: the lm-eval-harness model type ``fastspec-ablate``;
- :mod:`fastspec.integrations.ray`: ``CovarianceAggregate``, a Ray Data aggregation.
"""

"""fastspec inside other tools (each module imports its tool only when it is imported itself,
so ``import fastspec`` never does): :mod:`fastspec.integrations.torchmetrics`."""

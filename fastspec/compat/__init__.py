"""Drop-in replacements for other tools' spectral functions, computed by fastspec."""

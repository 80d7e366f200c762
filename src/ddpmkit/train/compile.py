"""torch.compile for training and sampling, with a clean fallback to eager."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import InputError


def maybe_compile(net: nn.Module, enabled: bool, **compile_kwargs: Any) -> nn.Module:
    """``torch.compile(net)`` when ``enabled``, else ``net``; any failure -> warning + eager.

    torch.compile is lazy: errors surface at the first call. The returned module therefore
    compiles on first call and, if that raises anything but InputError, warns once and keeps
    running the eager net. The eager net's parameters are shared, so optimizers and
    state_dicts work either way (save ``net.state_dict()`` of the *eager* net).
    """
    if not enabled:
        return net
    try:
        compiled = torch.compile(net, **compile_kwargs)
    except Exception as e:  # noqa: BLE001 - any backend problem means "run eager"
        warnings.warn(f"torch.compile unavailable ({type(e).__name__}: {e}); running eager",
                      RuntimeWarning, stacklevel=2)
        return net
    return _CompiledWithFallback(net, compiled)


class _CompiledWithFallback(nn.Module):
    """Calls the compiled net; on its first failure warns and uses the eager net from then on."""

    def __init__(self, eager: nn.Module, compiled: Callable[..., torch.Tensor]):
        super().__init__()
        self.eager = eager
        self._compiled = compiled
        self._failed = False

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self._failed:
            try:
                return self._compiled(*args, **kwargs)
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 - compile/backend errors -> eager
                self._failed = True
                warnings.warn(f"torch.compile failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); running eager",
                              RuntimeWarning, stacklevel=2)
        return self.eager(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return self.eager.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.eager.load_state_dict(*args, **kwargs)

"""The Hugging Face libraries' log lines, each once, through our handlers (so in the journal's
format under systemd), and the same whatever the environment says.

Both libraries add a stderr handler of their own. The Hub's also propagates to ours (each line
twice). transformers' propagates only when $CI is set: elsewhere its lines came out as
`[transformers] ...` beside ours, in CI twice, once with our format.
"""

from __future__ import annotations

import logging

# torch.jit.trace probes every attribute of a module it records for exported methods
# (`torch._jit_internal.module_has_exports`), which reads transformers' `loss_function` property,
# which warns that no loss type is configured. The daemon never computes a loss: the warning,
# printed at each start, only misled whoever read it.
_LOSS_TYPE_WARNING = "`loss_type="


class _WithoutLossTypeWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_LOSS_TYPE_WARNING)


def single_library_logs() -> None:
    """The Hub's and transformers' lines through our handlers only, without the loss-type
    warning a trace provokes. Imports transformers (the callers load a model with it anyway)."""
    from transformers.utils import logging as hf_logging

    logging.getLogger("huggingface_hub").handlers.clear()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    modeling = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(known, _WithoutLossTypeWarning) for known in modeling.filters):
        modeling.addFilter(_WithoutLossTypeWarning())

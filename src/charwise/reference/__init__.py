"""charwise.reference: the spec's character LSTM in pure NumPy, with hand-written BPTT.

It is the readable twin of the torch engine (charwise.model): same parameter names and layouts,
same state tuple, so checkpoints move between the two. It never imports torch.

    CharLSTM            model: forward / loss / backward, state_dict, zero_state   (engine.py)
    cells               one layer's forward and backward for lstm, gru, rnn        (cells.py)
    AdamW, Adam, clip_grad_norm_                                                   (optim.py)
    gradcheck, run_gradcheck, format_table                                         (gradcheck.py)
    from_spec_layout, to_spec_layout   spec's W (4H, E+H) <-> torch's weights      (layout.py)
    ReferenceTrainer    truncated-BPTT training step                               (trainer.py)
"""
from .engine import CharLSTM
from .gradcheck import Row, format_table, gradcheck, passed, run_gradcheck
from .layout import from_spec_layout, to_spec_layout
from .optim import Adam, AdamW, clip_grad_norm_
from .trainer import ReferenceTrainer

__all__ = ["CharLSTM", "Row", "gradcheck", "run_gradcheck", "format_table", "passed",
           "from_spec_layout", "to_spec_layout", "Adam", "AdamW", "clip_grad_norm_",
           "ReferenceTrainer"]

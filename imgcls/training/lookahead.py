"""Lookahead (config.lookahead_every, airbench's): slow weights that the weights return to.

Every `every` steps the slow weights (params and BatchNorm statistics, the LookaheadTrainState's
`slow`) move towards the weights, and the weights restart from them; the last step ends the run
on them. A pure function of the state, applied inside the train step (imgcls.training.step):
exact under resume.
"""

import jax
import jax.numpy as jnp

from imgcls.models import contract
from imgcls.training import ema


def lookahead_decay_at(done, every: int, decay: float, power: float, total_steps: int):
    """The slow weights' decay at the sync after step `done` (1-based): airbench's
    decay^every x (done / total_steps)^power, so that early syncs mostly follow the weights
    and late ones average over more and more of the run."""
    progress = jnp.asarray(done, jnp.float32) / total_steps
    return jnp.asarray(decay**every, jnp.float32) * progress**power


def lookahead(state, every: int, decay: float, power: float, total_steps: int):
    """After each step: every `every` steps the slow weights (params and BatchNorm statistics)
    become d x slow + (1 - d) x weights (d = lookahead_decay_at) and the weights restart from
    them; the last step (total_steps) also sets the weights to the slow ones, so the run ends
    on its average (airbench's lookahead, a pure function of the state: exact under resume)."""
    done = state.step
    trained = contract.variables_of(state)
    sync = done % every == 0
    mixed = ema.update(
        state.slow, trained, lookahead_decay_at(done, every, decay, power, total_steps)
    )
    slow = jax.tree.map(lambda m, s: jnp.where(sync, m, s), mixed, state.slow)
    reset = sync | (done >= total_steps)
    weights = jax.tree.map(lambda s, w: jnp.where(reset, s, w), slow, trained)
    return state.replace(params=weights["params"], batch_stats=weights["batch_stats"], slow=slow)

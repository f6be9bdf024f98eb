"""The safety nets of finetuning (tutorial section 9): keep the best evaluation's checkpoint, roll
back to it when an evaluation drops far below it, stop when none has beaten it for a while."""
from __future__ import annotations

from typing import Callable

from .config import Config
from .logging import fmt_return


class SafetyNets:
    # lr_factor: the learning rate's factor, multiplied by --rollback-lr-factor at each rollback.
    FRESH = {"best_return": None, "best_updates": None, "since_best": 0, "lr_factor": 1.0}

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.state = dict(self.FRESH)

    @property
    def lr_factor(self) -> float:
        return self.state["lr_factor"]

    def after_eval(self, ret: float, updates: int, save_best: Callable[[], None],
                   restore_best: Callable[[], None], event: Callable[..., None]) -> str | None:
        """Judge an evaluation's return: "rolled_back", "stop" or None. ``event(name, message,
        **fields)`` records what was done."""
        cfg, state = self.cfg, self.state
        best = state["best_return"]
        if best is None or ret > best:
            state.update(best_return=ret, best_updates=updates, since_best=0)
            save_best()
            event("new_best", f"new best evaluation return {fmt_return(ret)}; saved checkpoints/best.pt",
                  eval_return=ret, previous_best=best)
            return None
        state["since_best"] += 1
        if cfg.rollback_drop is not None and ret < best - cfg.rollback_drop * abs(best):
            restore_best()
            state["lr_factor"] *= cfg.rollback_lr_factor
            event("rollback_to_best",
                  f"evaluation return {fmt_return(ret)} is more than {cfg.rollback_drop:.0%} below the best "
                  f"{fmt_return(best)}: rolled back to the best weights (from {state['best_updates']} "
                  f"updates), learning-rate factor {state['lr_factor']:g}", eval_return=ret, best_return=best,
                  best_updates=state["best_updates"], lr_factor=state["lr_factor"])
            return "rolled_back"
        if cfg.early_stop_patience and state["since_best"] >= cfg.early_stop_patience:
            event("early_stop", f"no new best in {state['since_best']} evaluations: finetuning stops early",
                  evals_without_improvement=state["since_best"], best_return=best)
            return "stop"
        return None

    def best(self) -> dict | None:
        """The best evaluation so far, for the run's summary."""
        if self.state["best_return"] is None:
            return None
        return {"return_mean": self.state["best_return"], "updates": self.state["best_updates"]}

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)

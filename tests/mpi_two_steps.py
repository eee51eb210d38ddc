"""Run under ``mpirun -n 2`` by tests/test_distributed.py: two training steps per rank on a tiny
dataset, then every rank saves its parameters (before and after) to OUT/rank<r>.npz."""
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from conftest import tiny_config  # noqa: E402
from xumx.config import TrainConfig  # noqa: E402
from xumx.training.trainer import Trainer  # noqa: E402


def main(root, out):
    cfg = TrainConfig(root=root, is_wav=True, output=out + "/run", epochs=1, batch_size=1,
                      seq_dur=0.25, samples_per_track=2, valid_dur=0.5, seed=3)
    trainer = Trainer(tiny_config(nb_layers=1), cfg, progress=False)
    assert trainer.comm.n_procs == 2, trainer.comm.n_procs
    assert trainer.data.iterations(cfg.batch_size, trainer.comm.n_procs) == 2
    start = {}
    original = trainer._train_epoch

    def record_then_train(*args):
        start.update({k: np.array(v.d) for k, v in trainer.model.get_parameters().items()})
        first = next(trainer.data.batches(1, cfg.seed, cfg.batch_size, trainer.comm.rank, 2))[0]
        start["__first_batch__"] = first
        return original(*args)

    trainer._train_epoch = record_then_train
    trainer.run()
    end = {k: np.array(v.d) for k, v in trainer.model.get_parameters().items()}
    np.savez(f"{out}/rank{trainer.comm.rank}.npz",
             **{"start/" + k: v for k, v in start.items()}, **{"end/" + k: v for k, v in end.items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

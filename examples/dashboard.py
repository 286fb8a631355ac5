"""A batch to watch in the browser: ``python examples/dashboard.py [STORE] [--seconds N]``.

Needs ``pip install "localabort[web]"``. It prints the page's URL (open it:
the URL carries the page's token), then runs tasks of every kind for about
``--seconds`` (default 120): most succeed, some fail, some retry, and you
can abort any of them from the page. Ctrl-C stops it as any batch stops.
With a STORE path, ``localabort serve STORE`` shows the same tasks after
the batch has ended.
"""

from __future__ import annotations

import argparse
import logging
import random
import time

from localabort import AbortableTask, Executor


class Render(AbortableTask):
    """Renders ``frames`` frames of a scene, checking for an abort before each one."""

    def run(self, scene: str, frames: int, fps: float = 25.0) -> int:
        log = logging.getLogger("render")
        log.warning("%s: %d frames at %g fps", scene, frames, fps)
        for frame in range(frames):
            if self.is_aborted():
                log.warning("%s: aborted at frame %d", scene, frame)
                return frame
            time.sleep(1 / fps)
            if frame % 5 == 0:
                print(f"{scene}: frame {frame} done")
            if scene.startswith("broken") and frame == frames // 3:
                raise ValueError(f"{scene}: frame {frame} has no camera")
            self.progress(frame + 1, frames)
        return frames


class Upload(AbortableTask):
    """Uploads a file; the network fails now and then, and the task is retried."""

    autoretry_for = (ConnectionError,)
    max_retries = 3
    default_retry_delay = 2

    def run(self, name: str, chunks: int) -> str:
        for chunk in range(chunks):
            if self.is_aborted():
                return f"{name}: {chunk} of {chunks} chunks"
            time.sleep(0.05)
            if self.request.retries == 0 and chunk == chunks // 2 and random.random() < 0.5:
                raise ConnectionError(f"{name}: connection reset at chunk {chunk}")
            self.progress(chunk + 1, chunks)
        return name


def main(store: str | None, seconds: float, workers: int) -> None:
    with Executor(max_workers=workers, store=store, dashboard=True) as ex:
        # About ``seconds`` of work for ``workers`` workers: each Render takes frames / 25 seconds.
        scenes = max(4, int(seconds * workers / 6))
        for i in range(scenes):
            name = f"broken-{i}" if i % 9 == 4 else f"scene-{i}"
            ex.submit(Render, name, frames=random.randint(60, 240))
            if i % 3 == 0:
                ex.submit(Upload, f"scene-{i}.mp4", chunks=random.randint(20, 60))
    print("the batch has ended; its tasks stay in the store")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?", help="a SQLite file (default: a private one, removed at the end)")
    parser.add_argument("--seconds", type=float, default=120, help="about how long the batch runs")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    try:
        main(args.store, args.seconds, args.workers)
    except KeyboardInterrupt:  # Ctrl-C aborted every task, and the store holds each one's final state
        print("stopped: the unfinished tasks were aborted")
        raise SystemExit(130) from None

"""The Crunch task of the README's example, in a module of its own so workers can import it."""

from __future__ import annotations

from localabort import AbortableTask


class Crunch(AbortableTask):
    def run(self, n: int) -> list:
        done = []
        for i in range(n):
            if self.is_aborted():  # cheap: call it as often as you like
                return done  # honoured abort -> state ABORTED
            done.append(i * i)
            self.progress(i + 1, n)
        return done

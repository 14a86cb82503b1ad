"""The one exception type of the launch runner."""


class LaunchError(Exception):
    """A launch file or its arguments cannot be turned into a plan.

    The message names the file and line when they are known, so a user can go straight to the
    offending tag: ``device.launch.xml:12: <node>: unsupported attribute 'respawn'``.
    """

    def __init__(self, what: str, file: str | None = None, line: int | None = None):
        self.what = what
        self.file = file
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        if self.file is None:
            return self.what
        if self.line is None:
            return f"{self.file}: {self.what}"
        return f"{self.file}:{self.line}: {self.what}"

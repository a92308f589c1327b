"""examples/deploy/: the load-balancer, systemd and Kubernetes files, checked
by the real tools where they are installed (haproxy -c, nginx -t,
systemd-analyze verify, kubectl kustomize; each test skips with one line when
its tool is missing), and against prefork itself: every option they give
prefork exists, every prefork command line in them loads (--print-config)
with the same settings, and the numbers that must agree do -- the health
port, the drain delay against the balancer's reaction time, the graceful
timeout against the stop timeouts."""

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from support import PREFORK, ROOT

DEPLOY = os.path.join(ROOT, "examples", "deploy")
FILES = ["haproxy.cfg", "nginx.conf", "app.service", "kubernetes.yaml", "README.md"]
TOOL_TIMEOUT = 10        # seconds, for each tool run
STOP_MARGIN = 5          # seconds a stop timeout must leave beyond drain + graceful
OTHER_TOOLS_OPTIONS = {"--now"}   # `systemctl enable --now`, in app.service's comments
APP_STUB = "def app(environ, start_response):\n    start_response('200 OK', [])\n    return []\n"

pytestmark = pytest.mark.timeout(20)


# -- helpers -------------------------------------------------------------------------

def read(name):
    with open(os.path.join(DEPLOY, name)) as file:
        return file.read()


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                          stdin=subprocess.DEVNULL, **kwargs)


def tool(name, checks):
    """The tool's path, or skip the test saying what is not checked."""
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed: examples/deploy/{checks} is not checked by it")
    return found


def seconds(text):
    """An HAProxy or nginx duration ('1s', '100ms', '2m', '20') in seconds."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text).groups()
    return float(number) * {"ms": 0.001, None: 1, "s": 1, "m": 60, "h": 3600}[unit]


def port(address):
    return int(address.rsplit(":", 1)[1])


def exec_start():
    """app.service's ExecStart= as argv (continuation lines joined)."""
    text = read("app.service").replace("\\\n", " ")
    argv = shlex.split(re.search(r"^ExecStart=(.*)$", text, re.M)[1])
    assert os.path.basename(argv[0]) == "prefork", argv
    return argv


def unit_value(key):
    return re.search(rf"^{key}=(.*)$", read("app.service"), re.M)[1].strip()


def yaml_scalar(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def yaml_block(text, key):
    """The lines nested under the first `key:` line of text (a YAML subset:
    block mappings and sequences, as kubernetes.yaml is written)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        found = re.match(rf"(\s*)(- )?{key}:\s*$", line)
        if found:
            indent = len(found[1]) + (2 if found[2] else 0)
            body = []
            for line in lines[i + 1:]:
                content = line.strip()
                if content and not content.startswith("#") \
                        and len(line) - len(line.lstrip()) <= indent:
                    break
                body.append(line)
            return "\n".join(body)
    raise AssertionError(f"kubernetes.yaml: no `{key}:` in\n{text}")


def yaml_value(text, key):
    """The scalar of the first `key: value` line of text."""
    found = re.search(rf"^\s*(?:- )?{key}:[ \t]*(\S.*?)\s*$", text, re.M)
    assert found, f"kubernetes.yaml: no `{key}: VALUE` in\n{text}"
    return yaml_scalar(found[1])


def kube_command():
    """The container's command in kubernetes.yaml, as argv."""
    argv = [yaml_scalar(line.strip()[2:]) for line in
            yaml_block(read("kubernetes.yaml"), "command").splitlines()
            if line.strip().startswith("- ")]
    assert argv and argv[0] == "prefork", argv
    return argv


def mentions():
    """{where: argv} of the prefork command lines quoted in the files' comments
    and prose ("prefork -b ..."), beside the two real ones."""
    found = {}
    for name in FILES:
        for number, line in enumerate(read(name).splitlines(), 1):
            if name == "app.service" and line.startswith("ExecStart="):
                continue
            match = re.search(r"(?<![\w/.-])prefork(\s+-[^`]*)", line)
            if match:
                found[f"{name}:{number}"] = ["prefork"] + shlex.split(match[1])
    return found


def command_lines():
    return {"app.service ExecStart": exec_start(), "kubernetes.yaml command": kube_command(),
            **mentions()}


def help_options():
    result = run(PREFORK + ["--help"], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", result.stdout))


def print_config(argv, directory):
    """prefork's settings for argv (its options and MODULE:OBJECT; a stub
    app:app is added where a quoted command line names none), as
    --print-config prints them."""
    args = argv[1:]
    if not args or not re.fullmatch(r"[A-Za-z_][\w.]*(:.+)?", args[-1]):
        args = args + ["app:app"]
    with open(os.path.join(directory, "app.py"), "w") as file:
        file.write(APP_STUB)
    env = dict(os.environ, PREFORK_CMD_ARGS="",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    result = run(PREFORK + ["--print-config"] + args, cwd=directory, env=env)
    assert result.returncode == 0, f"prefork {shlex.join(args)}: {result.stderr.strip()}"
    values = {}
    for line in result.stdout.splitlines():
        name, equals, value = line.partition(" = ")
        if equals and not line.startswith("#"):
            values[name] = ast.literal_eval(value)
    return values


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    """{where: settings} of every prefork command line in the files."""
    directory = tmp_path_factory.mktemp("deploy")
    return {where: print_config(argv, directory) for where, argv in command_lines().items()}


def haproxy_backend():
    """(check port, inter in s, fall, [server ports], timeout server in s)."""
    text = read("haproxy.cfg")
    check = re.search(r"^\s*default-server\s+(.*)$", text, re.M)[1].split()
    option = {key: value for key, value in zip(check, check[1:])}
    assert "check" in check, check
    servers = re.findall(r"^\s*server\s+\S+\s+(\S+)", text, re.M)
    timeout = re.search(r"^\s*timeout\s+server\s+(\S+)", text, re.M)[1]
    return (int(option["port"]), seconds(option["inter"]), int(option["fall"]),
            [port(address) for address in servers], seconds(timeout))


# -- the real tools ----------------------------------------------------------------------

def test_haproxy_accepts_its_config():
    haproxy = tool("haproxy", "haproxy.cfg")
    result = run([haproxy, "-c", "-f", os.path.join(DEPLOY, "haproxy.cfg")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_nginx_accepts_its_config(tmp_path):
    nginx = tool("nginx", "nginx.conf")
    if os.geteuid() != 0:
        pytest.skip("nginx -t needs root here (it opens nginx's log and temporary "
                    "directories, as the master would): nginx.conf is not checked")
    result = run([nginx, "-t", "-p", f"{tmp_path}/", "-e", str(tmp_path / "error.log"),
                  "-c", os.path.join(DEPLOY, "nginx.conf")])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test is successful" in output and "[warn]" not in output, output


def test_systemd_verifies_the_unit(tmp_path):
    analyze = tool("systemd-analyze", "app.service")
    # As written: the one complaint may be the program, /srv/app/.venv/bin/prefork,
    # which this machine does not have.
    result = run([analyze, "verify", os.path.join(DEPLOY, "app.service")])
    program = exec_start()[0]
    for line in (result.stdout + result.stderr).splitlines():
        assert f"Command {program} is not executable" in line, line
    # With a program that exists, not one word: systemd-analyze exits 0 even for an
    # unknown key or a value it cannot parse, and only says so.
    real = os.path.join(os.path.dirname(sys.executable), "prefork")
    unit = read("app.service").replace(
        f"ExecStart={program} ", f"ExecStart={real if os.path.exists(real) else '/bin/true'} ")
    (tmp_path / "app.service").write_text(unit)
    result = run([analyze, "verify", str(tmp_path / "app.service")])
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr


def test_kubectl_builds_the_manifests(tmp_path):
    kubectl = tool("kubectl", "kubernetes.yaml")
    # kustomize reads and rebuilds the resources with no cluster to ask (a client-side
    # dry run would download the API schema from one).
    shutil.copy(os.path.join(DEPLOY, "kubernetes.yaml"), tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources:\n- kubernetes.yaml\n")
    result = run([kubectl, "kustomize", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    kinds = re.findall(r"^kind: (\w+)$", result.stdout, re.M)
    assert sorted(kinds) == ["Deployment", "Service"], result.stdout


def test_kubernetes_yaml_is_well_formed():
    # Without a YAML library (prefork depends on none): the shape kubectl needs.
    text = read("kubernetes.yaml")
    assert "\t" not in text, "kubernetes.yaml: a tab (YAML indents with spaces)"
    documents = re.split(r"^---\s*$", text, flags=re.M)
    for document in documents:
        for line in document.splitlines():
            indent = len(line) - len(line.lstrip(" "))
            assert indent % 2 == 0 or line.lstrip().startswith("#"), line
        for key in ("apiVersion", "kind", "metadata"):
            assert re.search(rf"^{key}:", document, re.M), f"no top-level {key}:\n{document}"
        assert yaml_value(yaml_block(document, "metadata"), "name")
    assert len(documents) == 2


# -- prefork's options and settings -------------------------------------------------

def test_every_prefork_option_exists():
    options = help_options()
    for where, argv in command_lines().items():
        unknown = [arg for arg in argv[1:] if arg.startswith("-") and arg not in options]
        assert not unknown, f"{where}: not an option of prefork: {unknown}"
    for name in FILES:
        for word in re.findall(r"(?<![\w-])--[a-z][\w-]*", read(name)):
            assert word in options or word in OTHER_TOOLS_OPTIONS, \
                f"{name}: {word} is not an option of prefork"


def test_every_command_line_agrees(settings):
    # The balancers are set up for the hosts app.service runs, and the comments
    # quoting its command line must say what it runs.
    assert len(settings) >= 5, list(settings)
    host = settings["app.service ExecStart"]
    assert host["health_bind"] and host["drain_delay"] > 0
    for where, values in settings.items():
        for name in ("bind", "health_bind", "drain_delay", "graceful_timeout"):
            assert values[name] == host[name], f"{where}: {name} = {values[name]!r}, " \
                f"but app.service runs {name} = {host[name]!r}"


# -- the numbers that must agree ----------------------------------------------------

def test_systemd_stop_timeout_covers_drain_and_graceful(settings):
    host = settings["app.service ExecStart"]
    stop = seconds(unit_value("TimeoutStopSec"))
    assert stop >= host["drain_delay"] + host["graceful_timeout"] + STOP_MARGIN, \
        f"TimeoutStopSec={stop:g} < drain_delay + graceful_timeout + {STOP_MARGIN}"
    assert unit_value("KillMode") == "mixed"  # TERM for the master alone: it drains
    assert unit_value("Type") == "notify"
    assert f"`TimeoutStopSec` ({stop:g})" in read("README.md")


def test_haproxy_checks_the_health_port_within_the_drain(settings):
    host = settings["app.service ExecStart"]
    check_port, inter, fall, server_ports, timeout_server = haproxy_backend()
    assert check_port == port(host["health_bind"])
    assert server_ports and set(server_ports) == {port(b) for b in host["bind"]}
    assert inter * fall < host["drain_delay"], \
        f"HAProxy takes {inter * fall:g} s to see a drain of {host['drain_delay']:g} s"
    assert timeout_server <= host["graceful_timeout"]
    text = read("haproxy.cfg")
    assert re.search(r"^\s*http-check send meth GET uri /health\b", text, re.M)
    assert re.search(r"^\s*option redispatch\b", text, re.M)
    assert re.search(r"^\s*http-reuse never\b", text, re.M)


def test_nginx_upstream_agrees(settings):
    host = settings["app.service ExecStart"]
    text = read("nginx.conf")
    upstream = re.search(r"upstream\s+\w+\s*\{(.*?)\n\s*\}", text, re.S)[1]
    ports = re.findall(r"^\s*server\s+[\w.]+:(\d+)", upstream, re.M)
    assert ports and {int(p) for p in ports} == {port(b) for b in host["bind"]}
    read_timeout = re.search(r"^\s*proxy_read_timeout\s+(\w+);", text, re.M)[1]
    assert seconds(read_timeout) <= host["graceful_timeout"]
    retried = re.search(r"^\s*proxy_next_upstream\s+([^;]*);", text, re.M)[1].split()
    assert {"error", "timeout", "http_502", "http_503"} <= set(retried)
    assert "non_idempotent" not in retried


def test_kubernetes_numbers_agree(settings):
    pod = settings["kubernetes.yaml command"]
    text = read("kubernetes.yaml")
    grace = int(yaml_value(text, "terminationGracePeriodSeconds"))
    pre_stop = re.search(r"preStop:.*?seconds:\s*(\d+)", text, re.S)
    sleep = int(pre_stop[1]) if pre_stop else 0
    assert grace >= sleep + pod["drain_delay"] + pod["graceful_timeout"] + STOP_MARGIN, \
        f"terminationGracePeriodSeconds {grace} < preStop + drain + graceful + {STOP_MARGIN}"
    assert f"`terminationGracePeriodSeconds` ({grace})" in read("README.md")
    health = port(pod["health_bind"])
    ready = yaml_block(text, "readinessProbe")
    assert yaml_value(yaml_block(ready, "httpGet"), "path") == "/health"
    assert int(yaml_value(yaml_block(ready, "httpGet"), "port")) == health
    period, failures = int(yaml_value(ready, "periodSeconds")), int(yaml_value(ready,
                                                                            "failureThreshold"))
    assert period * failures < pod["drain_delay"]
    # Liveness never asks /health: it answers 503 while booting and draining.
    alive = yaml_block(text, "livenessProbe")
    assert "httpGet" not in alive
    assert int(yaml_value(yaml_block(alive, "tcpSocket"), "port")) == health
    container_ports = {int(p) for p in re.findall(r"containerPort:\s*(\d+)", text)}
    assert container_ports == {health} | {port(b) for b in pod["bind"]}
    service = [d for d in re.split(r"^---\s*$", text, flags=re.M)
               if re.search(r"^kind: Service$", d, re.M)]
    assert service and int(yaml_value(service[0], "targetPort")) in {port(b) for b in pod["bind"]}

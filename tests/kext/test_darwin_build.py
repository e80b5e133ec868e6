"""The macOS kext, built on this Linux host (darwin_build.py, `invoke build-kext --os darwin`).

Needs the Darwin build inputs (../shared/darwin or $KVMPORT_DARWIN) and clang-16: without
them these tests fail, saying what is missing. The first run builds Apple's ld64 (about
5 minutes, cached in ~/.cache/kvmport); later runs take seconds.
"""

from __future__ import annotations

import plistlib
import subprocess
from pathlib import Path

import pytest

import darwin_build
from lab.common import LabError


@pytest.fixture(scope="module")
def inputs() -> darwin_build.Inputs:
    return darwin_build.Inputs.find()  # raises, naming what is missing


@pytest.fixture(scope="module")
def bundle(inputs: darwin_build.Inputs) -> Path:
    return darwin_build.build()


def _binary(bundle: Path) -> Path:
    return bundle / "Contents" / "MacOS" / "kvmport"


def test_kext_is_an_x86_64_kext_bundle(bundle: Path) -> None:
    binary = _binary(bundle)
    darwin_build.check_macho(binary)  # MH_KEXT_BUNDLE, x86_64, no dyld info, _kmod_info
    dump = subprocess.run(
        ["llvm-objdump-16", "--macho", "--private-header", binary],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "KEXTBUNDLE" in dump and "X86_64" in dump
    plist = plistlib.loads((bundle / "Contents" / "Info.plist").read_bytes())
    assert plist["CFBundleExecutable"] == "kvmport"
    assert plist["CFBundlePackageType"] == "KEXT"


def test_kmod_info_names_the_bundle(bundle: Path) -> None:
    """kmutil matches kmod_info's name with CFBundleIdentifier."""
    plist = plistlib.loads((bundle / "Contents" / "Info.plist").read_bytes())
    data = _binary(bundle).read_bytes()
    assert plist["CFBundleIdentifier"].encode() + b"\0" in data


def test_imports_are_public_kpis_named_in_info_plist(
    bundle: Path, inputs: darwin_build.Inputs
) -> None:
    used = darwin_build.check_imports(_binary(bundle), darwin_build.INFO_PLIST, inputs.exports)
    assert "com.apple.kpi.private" not in used
    assert "_copyin" in used["com.apple.kpi.libkern"]
    assert "_mp_rendezvous" in used["com.apple.kpi.unsupported"]



def test_mmap_vcpu_is_served_through_public_iokit(
    bundle: Path, inputs: darwin_build.Inputs
) -> None:
    """KVMP_MMAP_VCPU: kvmport_main.c hands it to kvmp_os_iokit.cpp (C linkage), which maps
    the run pages with IOKit's physical-range descriptor and createMappingInTask."""
    main = darwin_build.OUT / "obj" / "kext_kvmport_main.o"
    iokit_o = darwin_build.OUT / "obj" / "kext_kvmp_os_iokit.o"
    assert "_kvmp_darwin_mmap_vcpu" in darwin_build.undefined_symbols(main)
    assert "_kvmp_darwin_mmap_vcpu" in darwin_build.defined_symbols(iokit_o)
    imports = darwin_build.undefined_symbols(iokit_o)
    # the core's functions it calls keep C linkage (no C++-mangled name of ours)
    assert {"_kvmp_vcpu_run_page_pa", "_kvmp_os_copy_from_user",
            "_kvmp_os_copy_to_user"} <= imports
    assert not [s for s in imports if s.startswith("__Z") and "kvmp" in s]
    used = darwin_build.check_imports(_binary(bundle), darwin_build.INFO_PLIST, inputs.exports)
    iokit = set(used["com.apple.kpi.iokit"])
    # withAddressRanges (IOAddressRange is IOVirtualRange on LP64), task NULL: physical
    assert "__ZN18IOMemoryDescriptor17withAddressRangesEP14IOVirtualRangejjP4task" in iokit
    assert "__ZN18IOMemoryDescriptor19createMappingInTaskEP4taskyjyy" in iokit

def _object(tmp_path: Path, inputs: darwin_build.Inputs, code: str) -> Path:
    src = tmp_path / "probe.c"
    src.write_text(code)
    obj = tmp_path / "probe.o"
    subprocess.run(
        [darwin_build.CLANG, *darwin_build.CFLAGS, "-I", str(inputs.headers),
         "-c", str(src), "-o", str(obj)],
        check=True,
    )
    return obj


def test_private_symbol_fails_the_check(tmp_path: Path, inputs: darwin_build.Inputs) -> None:
    """vslock is com.apple.kpi.private: a kext using it must not build."""
    obj = _object(tmp_path, inputs, (
        "#include <sys/types.h>\n"
        "int vslock(user_addr_t addr, user_size_t len);\n"
        "int probe(user_addr_t a) { return vslock(a, 4096); }\n"
    ))
    with pytest.raises(LabError, match=r"_vslock is not exported .*com\.apple\.kpi\.private"):
        darwin_build.check_imports(obj, darwin_build.INFO_PLIST, inputs.exports)


def test_public_symbol_of_an_unnamed_bundle_fails(
    tmp_path: Path, inputs: darwin_build.Inputs
) -> None:
    """Info.plist must name every bundle the kext uses: drop .mach, keep a Mach import."""
    obj = _object(tmp_path, inputs, (
        "#include <kern/task.h>\n"
        "task_t probe(void) { return current_task(); }\n"
    ))
    plist = plistlib.loads(darwin_build.INFO_PLIST.read_bytes())
    plist["OSBundleLibraries"] = {"com.apple.kpi.libkern": "17.0"}
    path = tmp_path / "Info.plist"
    path.write_bytes(plistlib.dumps(plist))
    with pytest.raises(LabError, match=r"_current_task is not exported .*com\.apple\.kpi\.mach"):
        darwin_build.check_imports(obj, path, inputs.exports)


def test_named_but_unused_or_private_bundles_fail(
    tmp_path: Path, inputs: darwin_build.Inputs
) -> None:
    obj = _object(tmp_path, inputs, "int probe(void) { return 0; }\n")
    for bundle in ("com.apple.kpi.bsd", "com.apple.kpi.private"):
        path = tmp_path / "Info.plist"
        path.write_bytes(plistlib.dumps({"OSBundleLibraries": {bundle: "17.0"}}))
        with pytest.raises(LabError, match=bundle.replace(".", r"\.")):
            darwin_build.check_imports(obj, path, inputs.exports)


def test_kext_numbers_are_bsd_ioc_void(tmp_path: Path, inputs: darwin_build.Inputs) -> None:
    """Every command's kext number against Darwin's own <sys/ioccom.h>, as the kext is built."""
    from tests.abi.test_conformance import commands

    lines = ["#include <sys/ioccom.h>", "#include <kvmport/kvmport_kext.h>"]
    for n in commands():
        lines.append(
            f"_Static_assert(KVMP_KEXT_IOC({n}) == _IOC(IOC_VOID, ({n} >> 8) & 0xff, "
            f'{n} & 0xff, ({n} >> 16) & 0x3fff), "{n}");'
        )
        lines.append(f'_Static_assert(KVMP_KEXT_FITS({n}) && IOCPARM_LEN(KVMP_KEXT_IOC({n})) '
                     f'== (({n} >> 16) & 0x3fff), "{n} size");')
    src = tmp_path / "ioc.c"
    src.write_text("\n".join(lines) + "\n")
    subprocess.run(
        [darwin_build.CLANG, *darwin_build.CFLAGS, "-I", str(inputs.headers),
         "-I", str(darwin_build.ROOT / "include"), "-c", str(src), "-o", str(tmp_path / "ioc.o")],
        check=True,
    )

"""``--prepare`` without the network: which wheels are asked for, and in which group they travel
(scripts/gpucheck/prepare.py)."""

import zipfile

from gpucheck import prepare as P


def make_wheel(folder, name, version="1.0", requires=()):
    w = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(w, "w") as z:
        z.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
    return w


def test_wheel_requirements_apply_markers_and_drop_extras(tmp_path):
    w = make_wheel(
        tmp_path,
        "kornia",
        requires=[
            "torch>=2.0",
            "kornia_rs>=0.1",
            'tomli; python_version < "3.11"',
            'pytest; extra == "dev"',
            'pywin32; sys_platform == "win32"',
        ],
    )
    assert P.wheel_requirements(w, "3.12") == ["torch>=2.0", "kornia_rs>=0.1"]
    assert "tomli" in P.wheel_requirements(w, "3.10")


def test_torch_dependent_packages_never_bring_torch(tmp_path, monkeypatch):
    calls = []
    deps = {"kornia": ["torch>=2", "kornia-rs>=0.1", "packaging"], "webdataset": ["numpy"]}

    def fake_pip(reqs, dest, flags, no_deps=False):  # a pip that resolves like the real one would
        reqs = list(reqs)
        calls.append((reqs, no_deps))
        for r in reqs:
            name = P.requirement_name(r)
            make_wheel(dest, name, requires=deps.get(name, []))
            if not no_deps:
                for d in deps.get(name, []):
                    make_wheel(dest, P.requirement_name(d))
        if not no_deps and any(P.requirement_name(r) == "kornia" for r in reqs):
            make_wheel(dest, "torch")

    monkeypatch.setattr(P, "pip_download", fake_pip)
    P.download_group(["kornia>=0.7", "webdataset", "torch>=2.2"], tmp_path, [], "3.12")
    assert calls[0] == (["kornia>=0.7"], True)
    asked = [P.requirement_name(r) for r in calls[1][0]]
    assert "torch" not in asked and {"webdataset", "kornia-rs", "packaging"} <= set(asked)
    got = {P.wheel_project(w) for w in tmp_path.glob("*.whl")}
    assert "torch" not in got and {"kornia", "kornia-rs", "webdataset", "numpy"} <= got


def test_groups_put_what_the_image_lacks_first(tmp_path):
    for group, names in {"base": ["webdataset", "numpy", "kornia"], "dali": ["nvidia-dali-cuda130", "numpy"]}.items():
        (tmp_path / group).mkdir()
        for n in names:
            make_wheel(tmp_path / group, n)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "photos.tar").write_bytes(b"x" * 10)
    files = P.grouped_files(tmp_path)
    groups = [g for _, g in files]
    assert groups == sorted(groups, key=P.GROUP_ORDER.index)  # base, photos, dali, spare
    by_name = {f.name: g for f, g in files}
    assert by_name["numpy-1.0-py3-none-any.whl"] == "spare" and len(files) == 5  # one numpy, as spare
    assert by_name["photos.tar"] == "photos" and by_name["nvidia_dali_cuda130-1.0-py3-none-any.whl"] == "dali"


def test_platform_args_list_every_manylinux_tag_up_to_the_glibc():
    args = P.platform_args("3.12", 28)
    tags = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags and args[args.index("--python-version") + 1] == "3.12"

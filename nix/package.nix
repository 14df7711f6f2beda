# hv built from this checkout: the commands, their man pages and shell
# completions, the polkit rules of the roles and the docs. The tests need
# a libvirt daemon with QEMU guests (tests/run.sh), so they do not run here.
{
  lib,
  rustPlatform,
  pkg-config,
  installShellFiles,
  libvirt,
  curl,
}:

rustPlatform.buildRustPackage {
  pname = "hv";
  version = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).workspace.package.version;

  src = lib.cleanSourceWith {
    src = ../.;
    filter = path: type: !(lib.hasInfix "/target" path);
  };
  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [
    pkg-config
    installShellFiles
  ];
  buildInputs = [
    libvirt
    curl
  ];

  doCheck = false;

  postInstall = ''
    installManPage man/*.1
    installShellCompletion --bash completions/bash/*
    installShellCompletion --zsh completions/zsh/*
    installShellCompletion --fish completions/fish/*
    install -Dm644 contrib/polkit/50-hv.rules $out/share/polkit-1/rules.d/50-hv.rules
    install -Dm644 -t $out/share/doc/hv docs/*.md
  '';

  meta = {
    description = "Small composable commands for a KVM/libvirt host: VMs in bulk, snapshots, encrypted backups, ISO checks, health and metrics";
    license = with lib.licenses; [
      mit
      asl20
    ];
    platforms = lib.platforms.linux;
    mainProgram = "hv-ls";
  };
}

# services.hv: hv's timers (backups, snapshot pruning, health, metrics, ISO
# verification) and the operator/admin roles over libvirt's polkit access
# control. The units come from nix/units.json, the same source as the plain
# units in contrib/systemd/, so NixOS and Debian hosts run the same commands
# with the same hardening. docs/deploy.md explains each option.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.hv;
  inherit (lib)
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    optionalAttrs
    types
    ;
  rendered = import ./render.nix {
    bindir = "${cfg.package}/bin";
    bash = "${pkgs.bash}/bin/bash";
  };
  units = builtins.fromJSON (builtins.readFile ./units.json);
  host = import ./host.nix {
    bindir = "${cfg.package}/bin";
    inherit (cfg) bridges networks pools;
  };
  defaultSchedule = name: (lib.findFirst (u: u.name == name) null units.units).onCalendar;
  keepArgs =
    keep: lib.concatStringsSep " " (lib.mapAttrsToList (period: n: "--keep-${period} ${toString n}") keep);
  common =
    optionalAttrs (cfg.connect != null) { HV_CONNECT = cfg.connect; }
    // optionalAttrs (cfg.auditLog != null) { HV_AUDIT_LOG = cfg.auditLog; };
  schedule =
    name:
    mkOption {
      type = types.str;
      default = defaultSchedule name;
      description = "When ${name} runs (systemd OnCalendar syntax).";
    };
  select = mkOption {
    type = types.str;
    default = "";
    example = "--tag prod";
    description = "hv-ls arguments choosing the VMs (default: every VM).";
  };
  # One feature: its service (with environment on top of the defaults) and timer.
  unit = name: feature: environment: extra: {
    systemd.services.${name} = mkIf feature.enable (
      lib.recursiveUpdate rendered.services.${name} (
        {
          environment = rendered.services.${name}.environment // common // environment;
        }
        // lib.optionalAttrs (cfg.environmentFile != null) {
          serviceConfig.EnvironmentFile = toString cfg.environmentFile;
        }
      )
      // extra
    );
    systemd.timers.${name} = mkIf feature.enable (
      lib.recursiveUpdate rendered.timers.${name} { timerConfig.OnCalendar = feature.schedule; }
    );
  };
in
{
  options.services.hv = {
    enable = mkEnableOption "hv, small composable commands for a KVM/libvirt host";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The hv package.";
    };

    connect = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "qemu:///system";
      description = "The libvirt URI the services use (HV_CONNECT); null for libvirt's default.";
    };

    hosts = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        h1 = "qemu+ssh://root@h1.lan/system";
        h2 = "qemu+ssh://root@h2.lan/system";
      };
      description = "libvirt hosts by alias, for working on several at once: written to /etc/hv/hosts, and HV_HOSTS is set for shells, so `hv-ls` lists every host and `-c h1` names one (docs/hosts.md). The timers keep working on this host only.";
    };
    bridges = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            interfaces = mkOption {
              type = types.listOf types.str;
              default = [ ];
              example = [ "enp3s0" ];
              description = "The host interfaces that join the bridge.";
            };
            mtu = mkOption {
              type = types.nullOr types.ints.positive;
              default = null;
              description = "The bridge's MTU; null for the default.";
            };
            dhcp = mkOption {
              type = types.bool;
              default = true;
              description = "Whether the bridge takes the host's address by DHCP (false: configure systemd.network.networks.\"40-NAME\" yourself).";
            };
          };
        }
      );
      default = { };
      example = {
        br0.interfaces = [ "enp3s0" ];
      };
      description = "Host bridges, by name, as systemd-networkd files: VMs join them through a libvirt bridge network (services.hv.networks) or a profile's \"bridge\" (docs/networks.md).";
    };

    networks = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            type = mkOption {
              type = types.enum [
                "nat"
                "isolated"
                "bridge"
              ];
              description = "nat (VMs reach out through the host), isolated, or bridge (VMs join a host bridge).";
            };
            address = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "192.168.100.1/24";
              description = "nat, isolated: the host's address on the network, CIDR.";
            };
            dhcp = mkOption {
              type = types.nullOr types.bool;
              default = null;
              description = "nat, isolated: DHCP on the network (default: on, the 10th address to the last but one).";
            };
            bridge = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "bridge: the host bridge (services.hv.bridges); nat, isolated: the bridge's name.";
            };
            autostart = mkOption {
              type = types.bool;
              default = true;
              description = "Start it with the host.";
            };
          };
        }
      );
      default = { };
      example = {
        lab = {
          type = "nat";
          address = "192.168.100.1/24";
        };
        lan = {
          type = "bridge";
          bridge = "br0";
        };
      };
      description = "libvirt networks, by name, as hv-net define's specs: defined at boot when missing (an existing one is left as it is).";
    };

    pools = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            path = mkOption {
              type = types.str;
              example = "/srv/images";
              description = "The pool's directory, made when missing.";
            };
            autostart = mkOption {
              type = types.bool;
              default = true;
              description = "Start it with the host.";
            };
          };
        }
      );
      default = { };
      example = {
        images.path = "/srv/images";
      };
      description = "Directory storage pools, by name, as hv-pool define's specs: defined at boot when missing (an existing one is left as it is).";
    };

    onFailure = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "\${pkgs.writeShellScript \"page\" \"curl -d \\\"$1 failed\\\" ntfy.sh/my-host\"}";
      description = "A command run with the failed unit's name whenever an hv service fails.";
    };

    backup = {
      enable = mkEnableOption "nightly backups of the VMs into an encrypted hv-backup repository, then prune and gc";
      repository = mkOption {
        type = types.str;
        example = "/srv/backup/hv";
        description = "The hv-backup repository (HV_BACKUP_REPO).";
      };
      recipientsFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/etc/hv/recipients.txt";
        description = "age recipients the repository is created with when it does not exist yet (a public key file; the identity stays off this host).";
      };
      inherit select;
      keep = mkOption {
        type = types.attrsOf types.ints.positive;
        default = {
          daily = 7;
          weekly = 4;
          monthly = 6;
        };
        description = "Retention: keep-last, -hourly, -daily, -weekly, -monthly, -yearly counts for hv-backup prune.";
      };
      schedule = schedule "hv-backup";
    };

    auditLog = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/log/hv/audit.jsonl";
      description = "The audit log every hv command appends its changes to (HV_AUDIT_LOG, for the services and for shells); null: the systemd journal (journalctl HV_VM=web1). Read it with hv-audit.";
    };

    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/hv.env";
      description = "A file of secrets every hv service reads (systemd EnvironmentFile), kept out of the Nix store: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for an s3:// repository or replica, with HV_S3_ENDPOINT and HV_S3_REGION.";
    };

    backupSync = {
      enable = mkEnableOption "a nightly copy of new backups to a replica of the repository (hv-backup sync), e.g. a disk or host elsewhere";
      destination = mkOption {
        type = types.str;
        example = "/mnt/offsite/hv";
        description = "The replica (HV_BACKUP_SYNC_TO): a new or empty directory the first sync makes a replica of services.hv.backup.repository.";
      };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ "--verify" ];
        example = [
          "--verify"
          "--prune"
          "--keep-monthly"
          "24"
        ];
        description = "More hv-backup sync arguments: --verify checks (and repairs) each backup there; --prune with --keep-* rules applies the replica's own retention.";
      };
      schedule = schedule "hv-backup-sync";
    };

    snapshotPrune = {
      enable = mkEnableOption "pruning of the snapshots hv made";
      inherit select;
      keep = mkOption {
        type = types.attrsOf types.ints.positive;
        default = {
          hourly = 24;
          daily = 7;
        };
        description = "Retention for hv-snap prune.";
      };
      schedule = schedule "hv-snap-prune";
    };

    snapshotSchedule = {
      enable = mkEnableOption "snapshots on schedules chosen by tag (snap:POLICY), taken and pruned by hv-snap schedule";
      policies = mkOption {
        type = types.nullOr (types.attrsOf types.anything);
        default = null;
        example = {
          hourly = {
            every = "1h";
            keep.last = 24;
          };
          nightly = {
            every = "1d";
            keep = {
              daily = 7;
              weekly = 4;
            };
            disk_only = true;
          };
        };
        description = "The policies, in the shape of hv-snap schedule's --policies file (docs/snapshots.md, Schedules); null: the built-in hourly, daily, weekly and monthly.";
      };
      schedule = schedule "hv-snap-schedule";
    };

    health = {
      enable = mkEnableOption "hv-health every few minutes, reporting what changed";
      maxBackupAge = mkOption {
        type = types.str;
        default = "26h";
        description = "--max-backup-age";
      };
      maxSnapshotAge = mkOption {
        type = types.str;
        default = "7d";
        description = "--max-snapshot-age";
      };
      maxSnapshots = mkOption {
        type = types.ints.unsigned;
        default = 10;
        description = "--max-snapshots";
      };
      diskWarn = mkOption {
        type = types.number;
        default = 85;
        description = "--disk-warn (percent used)";
      };
      diskFail = mkOption {
        type = types.number;
        default = 95;
        description = "--disk-fail (percent used)";
      };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "More hv-health arguments.";
      };
      onChange = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "A command that reads the changed check records (JSON lines) on stdin.";
      };
      fix = mkOption {
        type = types.listOf (
          types.enum [
            "vm.crashed"
            "vm.io_error"
            "vm.autostart"
          ]
        );
        default = [ ];
        example = [
          "vm.crashed"
          "vm.autostart"
        ];
        description = "--fix: the problems hv-health repairs on its own (docs/health.md, Repairs); none by default.";
      };
      fixAttempts = mkOption {
        type = types.ints.positive;
        default = 3;
        description = "--fix-attempts: repairs per VM within fixWindow before hv-health gives up on it until `hv-health --reset`.";
      };
      fixWindow = mkOption {
        type = types.str;
        default = "1h";
        description = "--fix-window";
      };
      fixBackoff = mkOption {
        type = types.str;
        default = "5m";
        description = "--fix-backoff: the wait after a VM's first repair; it doubles after each.";
      };
      schedule = schedule "hv-health";
    };

    metrics = {
      enable = mkEnableOption "hv-metrics into node_exporter's textfile directory";
      textfileDirectory = mkOption {
        type = types.str;
        default = "/var/lib/prometheus-node-exporter-text-files";
        description = "node_exporter's --collector.textfile.directory.";
      };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "--iso-library"
          "/var/lib/hv/isos"
        ];
        description = "More hv-metrics arguments.";
      };
      schedule = schedule "hv-metrics";
    };

    bootOrder = {
      enable = mkEnableOption "hv-boot.service: the VMs tagged boot:N start group by group at boot (lower N first, after each group's boot-delay) and stop in reverse at shutdown";
      inherit select;
      wait = mkOption {
        type = types.enum [
          "running"
          "agent"
        ];
        default = "running";
        description = "What each group waits for before the next (hv-start --wait).";
      };
      stopTimeout = mkOption {
        type = types.str;
        default = "3m";
        description = "How long each VM may take to shut down before it is forced off (hv-stop --timeout).";
      };
    };

    isoVerify = {
      enable = mkEnableOption "weekly re-verification of the hv-iso library";
      library = mkOption {
        type = types.str;
        default = "/var/lib/hv/isos";
        description = "The hv-iso library (HV_ISO_LIBRARY).";
      };
      schedule = schedule "hv-iso-verify";
    };

    roles.enable = mkOption {
      type = types.bool;
      default = true;
      description = "Groups ${units.operatorGroup} (list, start, stop, snapshot, back up) and ${units.adminGroup} (everything), enforced by libvirt's polkit access driver.";
    };
  };

  config = mkIf cfg.enable (mkMerge [
    (mkIf (cfg.bridges != { }) {
      systemd.network.enable = true;
      systemd.network.netdevs = host.network.netdevs;
      systemd.network.networks = host.network.networks;
    })
    (mkIf (cfg.networks != { } || cfg.pools != { }) {
      environment.etc."hv/networks.jsonl".text = host.networkSpecs;
      environment.etc."hv/pools.jsonl".text = host.poolSpecs;
      systemd.services.hv-host-setup = {
        description = "hv: the libvirt networks and storage pools of services.hv";
        documentation = [ "https://github.com/hv/hv/blob/main/docs/networks.md" ];
        after = [
          "libvirtd.service"
          "virtqemud.service"
          "systemd-networkd.service"
        ];
        wants = [ "libvirtd.service" ];
        wantedBy = [ "multi-user.target" ];
        environment = common;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = host.setup;
        };
      };
    })
    (mkIf (cfg.hosts != { }) {
      environment.etc."hv/hosts".text = lib.concatStrings (
        [ "# services.hv.hosts: an alias and a libvirt URI per line (docs/hosts.md)\n" ]
        ++ lib.mapAttrsToList (alias: uri: "${alias} ${uri}\n") cfg.hosts
      );
      environment.variables.HV_HOSTS = "/etc/hv/hosts";
    })
    {
      environment.systemPackages = [ cfg.package ];
      environment.variables =
        optionalAttrs (cfg.isoVerify.enable) { HV_ISO_LIBRARY = cfg.isoVerify.library; }
        // optionalAttrs (cfg.auditLog != null) { HV_AUDIT_LOG = cfg.auditLog; };
      systemd.services."hv-failure@" = {
        inherit (rendered.services."hv-failure@") description serviceConfig;
        environment = common // optionalAttrs (cfg.onFailure != null) { HV_ON_FAILURE = cfg.onFailure; };
      };
    }
    (unit "hv-backup" cfg.backup (
      {
        HV_BACKUP_REPO = cfg.backup.repository;
        HV_BACKUP_SELECT = cfg.backup.select;
        HV_BACKUP_KEEP = keepArgs cfg.backup.keep;
      }
      // optionalAttrs (cfg.backup.recipientsFile != null) {
        HV_BACKUP_RECIPIENTS_FILE = toString cfg.backup.recipientsFile;
      }
    ) { path = [ pkgs.qemu-utils ]; })
    (unit "hv-backup-sync" cfg.backupSync {
      HV_BACKUP_REPO = cfg.backup.repository;
      HV_BACKUP_SYNC_TO = cfg.backupSync.destination;
      HV_BACKUP_SYNC_ARGS = lib.concatStringsSep " " cfg.backupSync.extraArgs;
    } { })
    (unit "hv-snap-prune" cfg.snapshotPrune {
      HV_SNAP_SELECT = cfg.snapshotPrune.select;
      HV_SNAP_KEEP = keepArgs cfg.snapshotPrune.keep;
    } { })
    (unit "hv-snap-schedule" cfg.snapshotSchedule (
      optionalAttrs (cfg.snapshotSchedule.policies != null) {
        HV_SNAP_POLICIES = toString (
          pkgs.writeText "hv-snap-policies.json" (builtins.toJSON cfg.snapshotSchedule.policies)
        );
      }
    ) { })
    (unit "hv-health" cfg.health (
      {
        HV_HEALTH_ARGS = lib.concatStringsSep " " (
          [
            "--max-backup-age ${cfg.health.maxBackupAge}"
            "--max-snapshot-age ${cfg.health.maxSnapshotAge}"
            "--max-snapshots ${toString cfg.health.maxSnapshots}"
            "--disk-warn ${toString cfg.health.diskWarn}"
            "--disk-fail ${toString cfg.health.diskFail}"
          ]
          ++ lib.optional cfg.backup.enable "--repo ${cfg.backup.repository}"
          ++ lib.optional cfg.isoVerify.enable "--iso-library ${cfg.isoVerify.library}"
          ++ lib.optionals (cfg.health.fix != [ ]) [
            "--fix ${lib.concatStringsSep "," cfg.health.fix}"
            "--fix-attempts ${toString cfg.health.fixAttempts}"
            "--fix-window ${cfg.health.fixWindow}"
            "--fix-backoff ${cfg.health.fixBackoff}"
          ]
          ++ cfg.health.extraArgs
        );
      }
      // optionalAttrs (cfg.health.onChange != null) { HV_ON_CHANGE = cfg.health.onChange; }
    ) { })
    (unit "hv-metrics" cfg.metrics ({
      HV_METRICS_TEXTFILE_DIR = cfg.metrics.textfileDirectory;
      HV_METRICS_ARGS = lib.concatStringsSep " " (
        lib.optionals cfg.backup.enable [
          "--repo"
          cfg.backup.repository
        ]
        ++ cfg.metrics.extraArgs
      );
    }
    // optionalAttrs (cfg.health.enable && cfg.health.fix != [ ]) {
      HV_HEALTH_STATE = "/var/lib/hv/health.json";
    }) { })
    (unit "hv-iso-verify" cfg.isoVerify { HV_ISO_LIBRARY = cfg.isoVerify.library; } { })
    (mkIf cfg.bootOrder.enable {
      systemd.services.hv-boot = lib.recursiveUpdate rendered.services.hv-boot (
        {
          environment =
            rendered.services.hv-boot.environment
            // common
            // {
              HV_BOOT_SELECT = cfg.bootOrder.select;
              HV_BOOT_WAIT = cfg.bootOrder.wait;
              HV_BOOT_STOP_TIMEOUT = cfg.bootOrder.stopTimeout;
            };
        }
        // lib.optionalAttrs (cfg.environmentFile != null) {
          serviceConfig.EnvironmentFile = toString cfg.environmentFile;
        }
      );
    })
    (mkIf cfg.roles.enable {
      users.groups.${units.operatorGroup} = { };
      users.groups.${units.adminGroup} = { };
      security.polkit.enable = true;
      security.polkit.extraConfig = builtins.readFile ../contrib/polkit/50-hv.rules;
      virtualisation.libvirtd.extraConfig = ''
        access_drivers = [ "polkit" ]
      '';
    })
  ]);
}

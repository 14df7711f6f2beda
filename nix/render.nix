# nix/units.json (written by `cargo xtask gen` from xtask/src/deploy.rs, like
# contrib/systemd/) turned into NixOS systemd.services and systemd.timers
# attributes. Builtins only, so the tests evaluate it without nixpkgs and
# compare it with the plain units.
{
  bindir,
  bash,
  units ? builtins.fromJSON (builtins.readFile ./units.json),
}:
let
  subst = builtins.replaceStrings [ "@bindir@" "@bash@" ] [ bindir bash ];
  optional = name: value: if value == null then { } else { ${name} = value; };
  service = u: {
    name = u.name;
    value = {
      description = u.description;
      documentation = u.documentation;
      after = [
        "libvirtd.service"
        "virtqemud.service"
        "network-online.target"
      ];
      onFailure = [ "hv-failure@%N.service" ];
      environment = u.environment;
      serviceConfig =
        units.hardening
        // u.serviceConfig
        // {
          Type = "oneshot";
          ExecStartPre = map subst u.execStartPre;
          ExecStart = map subst u.execStart;
        };
    };
  };
  timer = u: {
    name = u.name;
    value = {
      description = "Run ${u.name}.service on schedule";
      wantedBy = [ "timers.target" ];
      timerConfig =
        {
          OnCalendar = u.onCalendar;
          Persistent = true;
        }
        // optional "RandomizedDelaySec" u.randomizedDelaySec
        // optional "AccuracySec" u.accuracySec;
    };
  };
in
{
  services = builtins.listToAttrs (map service units.units) // {
    "hv-boot" = {
      description = "hv: start the VMs tagged boot:N in their order, and stop them in reverse at shutdown";
      documentation = [
        "man:hv-start(1)"
        "man:hv-stop(1)"
      ];
      after = [
        "libvirtd.service"
        "virtqemud.service"
        "network-online.target"
      ];
      onFailure = [ "hv-failure@%N.service" ];
      wantedBy = [ "multi-user.target" ];
      environment = units.boot.environment;
      serviceConfig =
        units.hardening
        // units.boot.serviceConfig
        // {
          Type = "oneshot";
          ExecStart = [ (subst units.boot.execStart) ];
          ExecStop = [ (subst units.boot.execStop) ];
        };
    };
    "hv-failure@" = {
      description = "hv: tell someone that %i failed";
      serviceConfig = {
        Type = "oneshot";
        ExecStart = subst units.failureExecStart;
      };
    };
  };
  timers = builtins.listToAttrs (map timer units.units);
  inherit (units) operatorGroup adminGroup;
}

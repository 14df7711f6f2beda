# The host's bridges, libvirt networks and storage pools, from the module's
# options (services.hv.bridges, .networks, .pools). Bridges are the host's
# own network, so they become systemd-networkd files; networks and pools
# are libvirt's, so they become the JSON specs `hv-net define` and
# `hv-pool define` read, applied by a oneshot service at boot that leaves
# existing ones as they are. Builtins only, so the tests evaluate it
# without nixpkgs.
{
  bindir,
  bridges ? { },
  networks ? { },
  pools ? { },
}:
let
  names = builtins.attrNames;
  # A spec as hv-net and hv-pool take it: the attribute name is its name,
  # null fields are left out (the command's default applies).
  spec =
    name: fields:
    builtins.toJSON (
      { inherit name; } // builtins.removeAttrs fields (builtins.filter (k: fields.${k} == null) (names fields))
    );
  lines = attrs: builtins.concatStringsSep "\n" (map (n: spec n attrs.${n}) (names attrs));
  netdevs = builtins.listToAttrs (
    map (name: {
      name = "20-${name}";
      value = {
        netdevConfig = {
          Name = name;
          Kind = "bridge";
        }
        // (if bridges.${name}.mtu == null then { } else { MTUBytes = toString bridges.${name}.mtu; });
      };
    }) (names bridges)
  );
  # Each port joins its bridge; the bridge itself takes its address by DHCP
  # unless told otherwise.
  ports = builtins.concatLists (
    map (
      name:
      map (port: {
        name = "30-${name}-${port}";
        value = {
          matchConfig.Name = port;
          networkConfig.Bridge = name;
        };
      }) bridges.${name}.interfaces
    ) (names bridges)
  );
  selves = map (name: {
    name = "40-${name}";
    value = {
      matchConfig.Name = name;
      networkConfig.DHCP = if bridges.${name}.dhcp then "yes" else "no";
    };
  }) (names bridges);
in
{
  network = {
    inherit netdevs;
    networks = builtins.listToAttrs (ports ++ selves);
  };
  # The JSON lines of the specs, and the commands that apply them.
  networkSpecs = lines networks;
  poolSpecs = lines pools;
  setup =
    (if networks == { } then [ ] else [ "${bindir}/hv-net define --keep-existing /etc/hv/networks.jsonl" ])
    ++ (if pools == { } then [ ] else [ "${bindir}/hv-pool define --keep-existing /etc/hv/pools.jsonl" ]);
}

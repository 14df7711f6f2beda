pub fn run(_c: Cli) -> hv_common::Result<hv_common::Exit> { todo!() } #[derive(clap::Parser)] pub struct Cli {}

//! A closed set of names (a VM state, an output format, a disk format) is
//! one plain enum that lists its names once. The logic below a command's
//! `run` takes the enum and never sees clap; `cli::choice` turns the same
//! list into clap's parser, its "possible values" error and the shell
//! completions, so a flag's values and a record's names cannot drift.

pub trait Choice: Copy + Send + Sync + 'static {
    /// Every value, in the order help, errors and completions list them.
    const ALL: &'static [Self];

    /// The name users type and records print.
    fn name(self) -> &'static str;

    /// One line on what the value means, for completions.
    fn help(self) -> Option<&'static str> {
        None
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;
    use crate::profile::{DiskFormat, VirtType};
    use crate::State;

    fn round_trips<T: Choice + PartialEq + std::fmt::Debug>() {
        for &value in T::ALL {
            assert_eq!(T::from_name(value.name()), Some(value));
        }
        let mut names: Vec<_> = T::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), T::ALL.len(), "a name is listed twice");
    }

    #[test]
    fn every_name_reads_back_as_its_value() {
        round_trips::<State>();
        round_trips::<Format>();
        round_trips::<DiskFormat>();
        round_trips::<VirtType>();
        assert_eq!(State::from_name("Running"), None);
    }
}

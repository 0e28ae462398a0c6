//! What a read bounded by a maximum age asks Redis for beyond the values,
//! and how it turns the answers into each value's event time
//! (`event_fields` has the layout).
//!
//! Per view the read takes its time `@<view>` and its marker `@<view>+`,
//! and per feature of no view its own time `<feature>@t`: a handful of
//! fields beside the values, in the same `HMGET`. A view's features have
//! own times only where a write covered part of the view, and then the
//! marker holds the newest of them: with no marker, or one no newer than
//! the view's time, the view's time dates every feature of it. Only
//! entities whose marker is newer (a partial write newer than the last
//! whole one) need their own times, read in a second round trip.

use super::event_fields;
use crate::error::StoreError;

/// One entity of a bounded read: its value items, each one's event time so
/// far, and the names whose own time must still be read (`FirstPass`); or
/// that entity's error.
pub(crate) type DatedRow<T> = Result<(T, Vec<Option<u64>>, Vec<usize>), StoreError>;

enum Slot {
    /// Dated by a view: indexes of its time and marker among `fields`.
    View { time: usize, marker: usize },
    /// Dated alone: index of its own time among `fields`.
    Own(usize),
}

pub(crate) struct DatingPlan {
    /// The fields to read after the values, in order.
    pub fields: Vec<String>,
    slots: Vec<Slot>,
    /// Each name's own time field, for the follow-up read.
    own: Vec<String>,
}

/// One entity's event times after the first round trip.
pub(crate) struct FirstPass {
    /// Per name: its view's time, or its own when it has no view.
    pub times: Vec<Option<u64>>,
    /// Names (indexes) whose own time may be newer than their view's and
    /// must be read (`DatingPlan::own_field`) before judging them.
    pub needs_own: Vec<usize>,
}

impl DatingPlan {
    /// `view_of` gives each name's view (`None`: the name has none).
    pub fn new<'v, N: AsRef<str>>(
        names: &[N],
        view_of: impl Fn(&str) -> Option<&'v str>,
    ) -> DatingPlan {
        let mut fields: Vec<String> = Vec::new();
        let mut views: Vec<(&str, usize)> = Vec::new();
        let mut slots = Vec::with_capacity(names.len());
        let mut own = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref();
            own.push(event_fields::feature_time_field(name));
            let slot = match view_of(name) {
                Some(view) => {
                    let at = match views.iter().find(|(v, _)| *v == view) {
                        Some((_, at)) => *at,
                        None => {
                            fields.push(event_fields::view_time_field(view));
                            fields.push(event_fields::view_marker_field(view));
                            views.push((view, fields.len() - 2));
                            fields.len() - 2
                        }
                    };
                    Slot::View {
                        time: at,
                        marker: at + 1,
                    }
                }
                None => {
                    fields.push(event_fields::feature_time_field(name));
                    Slot::Own(fields.len() - 1)
                }
            };
            slots.push(slot);
        }
        DatingPlan { fields, slots, own }
    }

    /// The event times `time_at(i)` (the stored time in `fields[i]`, parsed)
    /// gives, and which names need their own time read too.
    pub fn first_pass(&self, time_at: impl Fn(usize) -> Option<u64>) -> FirstPass {
        let mut times = Vec::with_capacity(self.slots.len());
        let mut needs_own = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            match *slot {
                Slot::Own(at) => times.push(time_at(at)),
                Slot::View { time, marker } => {
                    let view_time = time_at(time);
                    if time_at(marker) > view_time {
                        needs_own.push(i);
                    }
                    times.push(view_time);
                }
            }
        }
        FirstPass { times, needs_own }
    }

    /// Name `i`'s own time field.
    pub fn own_field(&self, i: usize) -> &str {
        &self.own[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> DatingPlan {
        DatingPlan::new(&["a", "b", "free", "c"], |n| match n {
            "a" | "b" => Some("v"),
            "c" => Some("w"),
            _ => None,
        })
    }

    #[test]
    fn a_view_is_read_once_with_its_marker_and_a_free_feature_by_its_own_time() {
        assert_eq!(plan().fields, ["@v", "@v+", "free@t", "@w", "@w+"]);
    }

    #[test]
    fn own_times_are_read_only_where_a_marker_is_newer_than_its_views_time() {
        let p = plan();
        // @v = 10, no marker; free@t = 7; @w = 5, marker 9.
        let stored = [Some(10), None, Some(7), Some(5), Some(9)];
        let first = p.first_pass(|i| stored[i]);
        assert_eq!(first.times, [Some(10), Some(10), Some(7), Some(5)]);
        assert_eq!(first.needs_own, [3]);
        assert_eq!(p.own_field(3), "c@t");
        // A marker no newer than the view's time dates nothing newer.
        let stored = [Some(10), Some(8), None, None, Some(1)];
        let first = p.first_pass(|i| stored[i]);
        assert_eq!(first.needs_own, [3]);
        let stored = [Some(10), Some(8), None, Some(3), Some(3)];
        assert!(p.first_pass(|i| stored[i]).needs_own.is_empty());
    }
}

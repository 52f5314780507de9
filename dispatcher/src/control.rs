//! What both the job and its dispatch loop speak of: the job's state and the settings that
//! change while it runs (POST /job/config, /job/pause, /job/resume). A leaf, so the dispatch
//! loop can use them without knowing the job.

use serde::Serialize;

use crate::config::Speed;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for `min_replayers` or POST /job/start.
    Waiting,
    Running,
    /// POST /job/pause: nothing more is released until POST /job/resume.
    Paused,
    /// Input done; waiting for the replayers' last acks.
    Draining,
    Finished,
    Stopped,
}

impl JobState {
    /// Finished or stopped: nothing more happens.
    pub fn is_over(self) -> bool {
        matches!(self, JobState::Finished | JobState::Stopped)
    }
}

/// What can change while a job runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Control {
    /// The pace: a factor, "max", or an arrival rate (`qps`).
    pub speed: Speed,
    pub rate: f64,
    pub paused: bool,
}

/// Written as `{"speed": 2 | "max" | null, "qps": 500 | null, "rate", "paused"}`: the pace
/// is a speed or a qps, and the other is null.
impl Serialize for Control {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = s.serialize_struct("Control", 4)?;
        match self.speed {
            Speed::Max => out.serialize_field("speed", "max")?,
            Speed::Factor(f) => out.serialize_field("speed", &f)?,
            Speed::Qps(_) => out.serialize_field("speed", &None::<f64>)?,
        }
        let qps = if let Speed::Qps(q) = self.speed { Some(q) } else { None };
        out.serialize_field("qps", &qps)?;
        out.serialize_field("rate", &self.rate)?;
        out.serialize_field("paused", &self.paused)?;
        out.end()
    }
}

/// Read back from a report (`reprise merge`): the form [`Control`]'s `Serialize` writes.
impl<'de> serde::Deserialize<'de> for Control {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Written {
            speed: serde_json::Value,
            qps: Option<f64>,
            rate: f64,
            paused: bool,
        }
        let w = Written::deserialize(d)?;
        let speed = match (&w.speed, w.qps) {
            (serde_json::Value::String(s), _) if s == "max" => Speed::Max,
            (serde_json::Value::Number(n), _) => Speed::Factor(n.as_f64().unwrap_or(1.0)),
            (serde_json::Value::Null, Some(q)) => Speed::Qps(q),
            (other, _) => {
                return Err(serde::de::Error::custom(format!(
                    "speed {other}: neither a number, \"max\" nor null beside a qps"
                )));
            }
        };
        Ok(Control { speed, rate: w.rate, paused: w.paused })
    }
}

/// A live change that cannot apply; the message says which value and the rule.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ControlError {
    #[error("speed = {0}: must be a number > 0 or \"max\"")]
    Speed(f64),
    #[error("rate = {0}: must be a number > 0 and ≤ 1000")]
    Rate(f64),
    #[error("qps = {0}: must be a number > 0 and ≤ 10000000 (requests a second)")]
    Qps(f64),
}

impl Control {
    /// These settings with a new pace (speed or qps) and/or rate, checked as the job file's
    /// are.
    pub fn with(self, speed: Option<Speed>, rate: Option<f64>) -> Result<Control, ControlError> {
        match speed {
            Some(Speed::Factor(f)) if !(f.is_finite() && f > 0.0) => return Err(ControlError::Speed(f)),
            Some(Speed::Qps(q)) if !(q.is_finite() && q > 0.0 && q <= 10_000_000.0) => {
                return Err(ControlError::Qps(q));
            }
            _ => {}
        }
        if let Some(r) = rate
            && !(r.is_finite() && r > 0.0 && r <= 1000.0)
        {
            return Err(ControlError::Rate(r));
        }
        Ok(Control { speed: speed.unwrap_or(self.speed), rate: rate.unwrap_or(self.rate), ..self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_keeps_what_it_does_not_name_and_refuses_bad_values() {
        let c = Control { speed: Speed::Factor(1.0), rate: 1.0, paused: true };
        let changed = c.with(Some(Speed::Max), None).expect("max is a speed");
        assert_eq!(changed, Control { speed: Speed::Max, rate: 1.0, paused: true });
        assert_eq!(c.with(None, Some(0.0)), Err(ControlError::Rate(0.0)));
        assert_eq!(c.with(Some(Speed::Factor(-1.0)), Some(2.0)), Err(ControlError::Speed(-1.0)));
        assert!(c.with(None, Some(1001.0)).expect_err("too many").to_string().contains("≤ 1000"));
        assert_eq!(c.with(Some(Speed::Qps(0.0)), None), Err(ControlError::Qps(0.0)));
    }

    #[test]
    fn the_pace_is_a_speed_or_a_qps_and_the_other_is_null() {
        let json = |speed| serde_json::to_value(Control { speed, rate: 1.5, paused: false }).expect("json");
        assert_eq!(
            json(Speed::Factor(2.0)),
            serde_json::json!({"speed": 2.0, "qps": null, "rate": 1.5, "paused": false})
        );
        assert_eq!(json(Speed::Max)["speed"], "max");
        assert_eq!(
            json(Speed::Qps(300.0)),
            serde_json::json!({"speed": null, "qps": 300.0, "rate": 1.5, "paused": false})
        );
    }
}

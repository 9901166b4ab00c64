//! Load shedding: above `max_load`, reject some requests at once so that the rest stay
//! fast.
//!
//! The caller measures load in `0.0..=1.0`. The route uses its concurrency limiter:
//! the larger of the share of slots in use and the share of queue places in use. It
//! calls [`LoadShedder::should_shed`] per request with the request's priority.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The requests shed above `max_load`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShedStrategy {
    /// The lowest priority first: low above `max_load`, normal too once load reaches 1,
    /// high never (it queues or is rejected when the queue is full).
    #[default]
    Priority,
    /// Requests below high priority at random, more as load rises from `max_load` to 1.
    Random,
    /// Every new request above `max_load`, whatever its priority, so the requests
    /// already admitted finish.
    Newest,
}

/// Load shedding settings.
///
/// ```
/// use adpa_resilience::load_shed::LoadShedConfig;
///
/// let config: LoadShedConfig = toml::from_str(r#"
///     max_load = 0.8
///     shed_strategy = "priority"
/// "#).unwrap();
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadShedConfig {
    /// Load above which requests are shed, between 0.0 and 1.0 (both exclusive).
    pub max_load: f64,
    /// The requests that are shed.
    #[serde(default)]
    pub shed_strategy: ShedStrategy,
}

impl LoadShedConfig {
    /// Checks every setting against its valid range.
    ///
    /// # Errors
    ///
    /// Returns the first setting that is out of range, by its config name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Load never exceeds 1.0, so a max_load of 1.0 or more would never shed.
        if !(self.max_load > 0.0 && self.max_load < 1.0) {
            return Err(ConfigError::new(
                "max_load",
                format!(
                    "must be between 0.0 and 1.0, both exclusive, got {}",
                    self.max_load
                ),
            ));
        }
        Ok(())
    }
}

/// The highest priority rank; requests of this rank are never shed by `priority` or
/// `random`.
pub const HIGHEST_PRIORITY: u8 = 2;

/// Decides per request whether to shed it.
#[derive(Debug, Clone)]
pub struct LoadShedder {
    config: LoadShedConfig,
}

impl LoadShedder {
    /// Creates a shedder.
    ///
    /// # Errors
    ///
    /// Returns the setting that is out of range.
    pub fn new(config: LoadShedConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// Returns whether to shed a request of `priority` (0 low, 1 normal, 2 high) at
    /// `load`.
    pub fn should_shed<R: Rng + ?Sized>(&self, load: f64, priority: u8, rng: &mut R) -> bool {
        let max_load = self.config.max_load;
        if load <= max_load {
            return false;
        }
        match self.config.shed_strategy {
            ShedStrategy::Priority => match priority {
                0 => true,
                p if p < HIGHEST_PRIORITY => load >= 1.0,
                _ => false,
            },
            ShedStrategy::Random => {
                if priority >= HIGHEST_PRIORITY {
                    return false;
                }
                let overload = if max_load >= 1.0 {
                    1.0
                } else {
                    ((load - max_load) / (1.0 - max_load)).clamp(0.0, 1.0)
                };
                rng.random_bool(overload)
            }
            ShedStrategy::Newest => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    fn shedder(strategy: ShedStrategy) -> LoadShedder {
        LoadShedder::new(LoadShedConfig {
            max_load: 0.8,
            shed_strategy: strategy,
        })
        .unwrap()
    }

    #[test]
    fn below_max_load_sheds_nothing() {
        let mut rng = SmallRng::seed_from_u64(1);
        for strategy in [
            ShedStrategy::Priority,
            ShedStrategy::Random,
            ShedStrategy::Newest,
        ] {
            assert!(!shedder(strategy).should_shed(0.8, 0, &mut rng));
        }
    }

    #[test]
    fn priority_sheds_lowest_first() {
        let mut rng = SmallRng::seed_from_u64(1);
        let shedder = shedder(ShedStrategy::Priority);
        assert!(shedder.should_shed(0.9, 0, &mut rng));
        assert!(!shedder.should_shed(0.9, 1, &mut rng));
        assert!(shedder.should_shed(1.0, 1, &mut rng));
        assert!(!shedder.should_shed(1.0, 2, &mut rng));
    }

    #[test]
    fn random_sheds_in_proportion_to_overload() {
        let mut rng = SmallRng::seed_from_u64(3);
        let shedder = shedder(ShedStrategy::Random);
        let shed = (0..10_000)
            .filter(|_| shedder.should_shed(0.9, 1, &mut rng))
            .count();
        // Half-way from 0.8 to 1.0: about half.
        assert!((4_600..5_400).contains(&shed), "{shed}");
        assert!(!shedder.should_shed(1.0, 2, &mut rng));
    }

    #[test]
    fn newest_sheds_every_priority() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert!(shedder(ShedStrategy::Newest).should_shed(0.81, 2, &mut rng));
    }

    #[test]
    fn invalid_max_load_is_named() {
        for max_load in [0.0, 1.0, 1.5, f64::NAN] {
            let config = LoadShedConfig {
                max_load,
                shed_strategy: ShedStrategy::Priority,
            };
            assert_eq!(config.validate().map_err(|e| e.field), Err("max_load"));
        }
    }
}

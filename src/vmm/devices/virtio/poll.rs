//! How long a device thread polls its queues after serving them. A fixed
//! window either misses a driver that sends its next buffer a little later
//! or burns a CPU after every burst of one that does not; like KVM's halt
//! polling, the window grows when the next buffer came soon after it
//! ended and shrinks when it came much later.

use std::time::Duration;

/// The first window once polling pays.
const START: Duration = Duration::from_micros(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollWindow {
    window: Duration,
    max: Duration,
}

impl PollWindow {
    /// Starts with no polling: it has to pay first.
    pub fn new(max: Duration) -> Self {
        PollWindow {
            window: Duration::ZERO,
            max,
        }
    }

    pub fn get(&self) -> Duration {
        self.window
    }

    /// The driver notified `gap` after the device last served a buffer
    /// (polling had ended without one).
    pub fn notified_after(&mut self, gap: Duration) {
        self.window = if gap <= self.max {
            (self.window * 2).clamp(START, self.max)
        } else {
            self.window / 2
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_for_notifications_that_came_soon_and_shrinks_for_late_ones() {
        let max = Duration::from_millis(2);
        let mut w = PollWindow::new(max);
        assert_eq!(w.get(), Duration::ZERO);
        w.notified_after(Duration::from_micros(300));
        assert_eq!(w.get(), START);
        for _ in 0..10 {
            w.notified_after(Duration::from_micros(300));
        }
        assert_eq!(w.get(), max, "never past the longest");
        w.notified_after(Duration::from_millis(5));
        assert_eq!(w.get(), max / 2);
        for _ in 0..40 {
            w.notified_after(Duration::from_secs(1));
        }
        assert_eq!(w.get(), Duration::ZERO, "an idle driver costs no polling");
    }
}

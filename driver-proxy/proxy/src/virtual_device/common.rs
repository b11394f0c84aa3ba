//! What every virtual device shares: power (Open/Close Device), the device state chosen in the
//! Status dialog, and the error presets of the ErrorSimulating dialog (seed 001 §12.3, §12.4).

use std::collections::HashMap;

use openteller_proto::device::v1::{DeviceClass, DeviceState, SetError};

use crate::backend::{Failure, class_commands};
use crate::codes::{self, XfsError};

/// Power, state and error presets of a virtual device.
#[derive(Debug)]
pub struct SimCommon {
    class: DeviceClass,
    /// False after CloseDevice.
    pub powered: bool,
    /// The device state (ONLINE unless a fault or the tester changed it).
    pub state: DeviceState,
    errors: HashMap<&'static str, (XfsError, u32)>,
}

impl SimCommon {
    /// A powered, online device.
    pub fn new(class: DeviceClass) -> Self {
        SimCommon {
            class,
            powered: true,
            state: DeviceState::Online,
            errors: HashMap::new(),
        }
    }

    /// The state reported in status.
    pub fn device_state(&self) -> DeviceState {
        if self.powered {
            self.state
        } else {
            DeviceState::PowerOff
        }
    }

    /// Refuses commands while the device is off or in a state that cannot execute them.
    /// `Reset` may run in a hardware-error state (that is how faults are cleared).
    pub fn check_ready(&self, is_reset: bool) -> Result<(), Failure> {
        match self.device_state() {
            DeviceState::Online | DeviceState::Busy => Ok(()),
            DeviceState::HardwareError | DeviceState::UserError if is_reset => Ok(()),
            DeviceState::HardwareError => Err(Failure::xfs(
                codes::generic::HARDWARE_ERROR,
                "the device is in a hardware error state; reset it first",
            )),
            other => Err(Failure::not_ready(format!(
                "the device is {}",
                other.as_str_name()
            ))),
        }
    }

    /// Takes one preset error for `command`, if any is armed.
    pub fn take_error(&mut self, command: &str) -> Option<XfsError> {
        let (error, remaining) = self.errors.get_mut(command)?;
        let error = *error;
        *remaining -= 1;
        if *remaining == 0 {
            self.errors.remove(command);
        }
        Some(error)
    }

    /// Arms an error preset after validating it; nothing changes on a bad request.
    pub fn set_error(&mut self, request: &SetError) -> Result<(), Failure> {
        let Some(name) = class_commands(self.class)
            .iter()
            .find(|c| **c == request.command)
        else {
            return Err(Failure::invalid_data(format!(
                "unknown command {:?}; this device accepts {}",
                request.command,
                class_commands(self.class).join(", ")
            )));
        };
        let Some(error) = codes::lookup(self.class, request.error_code) else {
            return Err(Failure::invalid_data(format!(
                "error code {} is not a generic XFS error or a {} error",
                request.error_code,
                self.class.as_str_name()
            )));
        };
        if request.count == 0 || request.count > 1000 {
            return Err(Failure::invalid_data("count must be 1..=1000"));
        }
        self.errors.insert(name, (error, request.count));
        Ok(())
    }

    /// Removes every error preset.
    pub fn clear_errors(&mut self) {
        self.errors.clear();
    }

    /// Applies a state chosen by the tester; only states a device can really be in are allowed.
    pub fn set_state(&mut self, state: DeviceState) -> Result<(), Failure> {
        match state {
            DeviceState::Unspecified => Ok(()),
            DeviceState::PowerOff => Err(Failure::invalid_data(
                "use CloseDevice to power the device off",
            )),
            DeviceState::Online
            | DeviceState::Offline
            | DeviceState::NoDevice
            | DeviceState::HardwareError
            | DeviceState::UserError
            | DeviceState::Busy => {
                self.state = state;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_presets_count_down_and_validate() {
        let mut c = SimCommon::new(DeviceClass::CardReader);
        let bad_cmd = SetError {
            command: "CardReader.Fly".into(),
            error_code: -200,
            count: 1,
        };
        assert!(c.set_error(&bad_cmd).is_err());
        let bad_code = SetError {
            command: "CardReader.Eject".into(),
            error_code: -306,
            count: 1,
        };
        assert!(c.set_error(&bad_code).is_err());
        let zero = SetError {
            command: "CardReader.Eject".into(),
            error_code: -200,
            count: 0,
        };
        assert!(c.set_error(&zero).is_err());
        assert_eq!(c.take_error("CardReader.Eject"), None);
        let ok = SetError {
            command: "CardReader.Eject".into(),
            error_code: -200,
            count: 2,
        };
        c.set_error(&ok).unwrap();
        assert_eq!(c.take_error("CardReader.Eject"), Some(codes::idc::MEDIAJAM));
        assert_eq!(c.take_error("CardReader.Eject"), Some(codes::idc::MEDIAJAM));
        assert_eq!(c.take_error("CardReader.Eject"), None);
    }

    #[test]
    fn power_and_state_gate_commands() {
        let mut c = SimCommon::new(DeviceClass::PinPad);
        assert!(c.check_ready(false).is_ok());
        c.set_state(DeviceState::HardwareError).unwrap();
        assert!(c.check_ready(false).is_err());
        assert!(c.check_ready(true).is_ok());
        assert!(c.set_state(DeviceState::PowerOff).is_err());
        c.set_state(DeviceState::Online).unwrap();
        c.powered = false;
        assert_eq!(c.device_state(), DeviceState::PowerOff);
        assert!(c.check_ready(true).is_err());
    }
}

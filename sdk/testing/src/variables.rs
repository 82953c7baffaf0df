//! The variables fake (`fermyon:spin/variables`): values the test sets, every lookup recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::HasData;

use crate::bindings::platform::fermyon::spin::variables::{self as wit, Error};
use crate::lock;

#[derive(Default)]
struct Values {
    values: HashMap<String, String>,
    lookups: Vec<String>,
}

/// The variables fake. Clones share one set of values and one record.
#[derive(Clone, Default)]
pub struct FakeVariables {
    values: Arc<Mutex<Values>>,
}

impl FakeVariables {
    /// Gives the variable `name` the value `value`.
    pub fn set(&self, name: &str, value: &str) -> &Self {
        lock(&self.values)
            .values
            .insert(name.to_owned(), value.to_owned());
        self
    }

    /// The names looked up so far, oldest first.
    pub fn lookups(&self) -> Vec<String> {
        lock(&self.values).lookups.clone()
    }
}

/// The `HasData` marker that gives the bindings a [`FakeVariables`].
pub struct VariablesCapability;

impl HasData for VariablesCapability {
    type Data<'a> = &'a FakeVariables;
}

impl wit::Host for &FakeVariables {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, Error>> {
        let mut values = lock(&self.values);
        values.lookups.push(name.clone());
        // Spin's rule for names: lower-case letters, digits and underscores, starting with a
        // letter; the component would be refused by Spin for anything else.
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Ok(Err(Error::InvalidName(name)));
        }
        Ok(values
            .values
            .get(&name)
            .cloned()
            .ok_or(Error::Undefined(name)))
    }
}

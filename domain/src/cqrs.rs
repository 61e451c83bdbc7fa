//! cqrs-es adapters: every aggregate is a cqrs-es `Aggregate` whose `handle` is
//! [`EventSourced::decide`] and whose `apply` is [`EventSourced::apply`], and every event enum is
//! a cqrs-es `DomainEvent` with the stored name and version of [`Event`].
//!
//! The aggregates need no services (`Services = ()`): everything from outside arrives in the
//! command. Both `EventSourced` and `cqrs_es::Aggregate` have an `apply` method, so code that
//! imports both traits has to call them with fully qualified syntax, as below.

use crate::aggregate::{Event, EventSourced};
use crate::cart::{Cart, CartCommand, CartError, CartEvent};
use crate::order::{Order, OrderCommand, OrderError, OrderEvent};
use crate::payment::{Payment, PaymentCommand, PaymentError, PaymentEvent};
use crate::product::{Product, ProductCommand, ProductError, ProductEvent};

macro_rules! cqrs_aggregate {
    ($aggregate:ty, $command:ty, $event:ty, $error:ty) => {
        #[async_trait::async_trait]
        impl cqrs_es::Aggregate for $aggregate {
            type Command = $command;
            type Event = $event;
            type Error = $error;
            type Services = ();

            fn aggregate_type() -> String {
                <$aggregate as EventSourced>::STREAM_TYPE
                    .as_str()
                    .to_owned()
            }

            async fn handle(
                &self,
                command: Self::Command,
                _services: &Self::Services,
            ) -> Result<Vec<Self::Event>, Self::Error> {
                EventSourced::decide(self, command)
            }

            fn apply(&mut self, event: Self::Event) {
                EventSourced::apply(self, &event);
            }
        }

        impl cqrs_es::DomainEvent for $event {
            fn event_type(&self) -> String {
                Event::event_type(self).to_owned()
            }

            fn event_version(&self) -> String {
                Event::event_version(self).to_string()
            }
        }
    };
}

cqrs_aggregate!(Cart, CartCommand, CartEvent, CartError);
cqrs_aggregate!(Order, OrderCommand, OrderEvent, OrderError);
cqrs_aggregate!(Payment, PaymentCommand, PaymentEvent, PaymentError);
cqrs_aggregate!(Product, ProductCommand, ProductEvent, ProductError);

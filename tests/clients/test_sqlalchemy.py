"""Scenario 5: an ORM that keeps its own version column, SQLAlchemy's version_id_col, on
tables with the trigger enabled."""

import os

import pytest
from sqlalchemy import BigInteger, FetchedValue, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.orm.exc import StaleDataError


class Base(DeclarativeBase):
    pass


class Product(Base):
    """SQLAlchemy computes the next version itself and checks it in its WHERE clause."""
    __tablename__ = "orm_products"
    id: Mapped[int] = mapped_column(primary_key=True)
    price: Mapped[int]
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    __mapper_args__ = {"version_id_col": version}


class ServerVersioned(Base):
    """version_id_generator=False: the trigger alone moves the version."""
    __tablename__ = "orm_server_versioned"
    id: Mapped[int] = mapped_column(primary_key=True)
    price: Mapped[int]
    version: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=FetchedValue(), server_onupdate=FetchedValue())
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}


@pytest.fixture
def engine(admin):
    url = "postgresql+psycopg://{user}@/{db}?host={host}&port={port}".format(
        user=os.environ["PGUSER"], db=os.environ["PGDATABASE"],
        host=os.environ["PGHOST"], port=os.environ["PGPORT"])
    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("SELECT rowversion.enable('orm_products')"))
        conn.execute(text("SELECT rowversion.enable('orm_server_versioned')"))
    yield engine
    engine.dispose()


def stored_version(engine, table):
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT version FROM {table} WHERE id = 1")).scalar_one()


def test_orm_updates_succeed_without_double_increment(engine):
    with Session(engine) as session:
        session.add(Product(id=1, price=100))
        session.commit()
    for price in (110, 120, 130):
        with Session(engine) as session:
            product = session.get(Product, 1)
            product.price = price
            session.commit()
    assert stored_version(engine, "orm_products") == 4  # 1 at insert, +1 per update


def test_stale_orm_session_gets_stale_data_error(engine):
    with Session(engine) as session:
        session.add(Product(id=1, price=100))
        session.commit()
    with Session(engine) as first, Session(engine) as second:
        stale = first.get(Product, 1)
        fresh = second.get(Product, 1)
        fresh.price = 120
        second.commit()
        stale.price = 110
        with pytest.raises(StaleDataError):
            first.commit()
    with Session(engine) as session:
        product = session.get(Product, 1)
        assert (product.price, product.version) == (120, 2)


def test_trigger_only_versioning_detects_the_conflict_too(engine):
    with Session(engine) as session:
        item = ServerVersioned(id=1, price=100)
        session.add(item)
        session.commit()
        assert item.version == 1  # set by the trigger on INSERT
        item.price = 105
        session.commit()
        assert item.version == 2  # incremented by the trigger, fetched back by SQLAlchemy
    with Session(engine) as first, Session(engine) as second:
        stale = first.get(ServerVersioned, 1)
        fresh = second.get(ServerVersioned, 1)
        fresh.price = 120
        second.commit()
        stale.price = 110
        with pytest.raises(StaleDataError):
            first.commit()
    assert stored_version(engine, "orm_server_versioned") == 3
